//! The `active-directory` directory plugin against a real Samba 4 AD DC on
//! 127.0.0.1 (`resetgate_tests::samba`), one DC at a time: the tests of this
//! module form nextest's `samba` test group (`.config/nextest.toml`), and
//! the harness holds a file lock for the DC's lifetime.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use resetgate::config::GatewayConfig;
use resetgate::contract::{CallContext, PluginKind, SetPasswordFailure};
use resetgate::plugin::{Capabilities, Grants, Limits, LoadSpec, Plugin, PluginHost};
use resetgate::secret::Secret;
use resetgate_tests::samba::{self, SambaDc};
use resetgate_tests::{Gateway, wasm, write_config};
use serde_json::{Value, json};

#[test]
fn samba_dc_answers_over_verified_ldaps_and_stops_by_its_pid() {
    let dc = SambaDc::start();
    // The test CA verifies the DC's certificate for 127.0.0.1, and the
    // template's users bind with their passwords (proved by a search:
    // Samba has no WhoAmI).
    assert_eq!(
        dc.binds("jdoe@example.test", samba::JDOE_PASSWORD),
        Ok(true)
    );
    assert_eq!(
        dc.binds("jdoe@example.test", "Not-The-Passw0rd!"),
        Ok(false)
    );
    assert_eq!(
        dc.value(samba::JDOE_DN, "sAMAccountName").as_deref(),
        Some("jdoe")
    );
    // The disabled account really is disabled (userAccountControl bit 2).
    let uac: u32 = dc
        .value(samba::MDIS_DN, "userAccountControl")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(uac & 2, 2, "mdis must be disabled: {uac}");

    let pid = dc.pid();
    let status = dc.stop();
    assert_eq!(status.code(), Some(127), "samba exits with 127 on SIGTERM");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(
        TcpStream::connect_timeout(&"127.0.0.1:636".parse().unwrap(), Duration::from_secs(1))
            .is_err(),
        "nothing listens on 636 once the DC stopped"
    );
}

/// The LDAP connection the gateway config defines for the DC.
const CONNECTION: &str = "corp-ad";
/// What `static-answer` (the stand-in gate) is answered with.
const CODE: &str = "123456";

/// A DC, and a gateway config (in a temporary folder) whose `corp-ad`
/// connection binds to it over LDAPS as the administrator, with the bind
/// password in a 0600 secret file; the plugins folder holds
/// `active-directory`, the example lockout and `static-answer`; the
/// workflow `ad-reset` resets over AD behind one `static-answer` gate
/// (answer [`CODE`]) with a password policy that lets AD judge complexity.
struct Lab {
    dc: SambaDc,
    /// Holds the config, the secret file, plugins and workflows.
    _dir: tempfile::TempDir,
    config: PathBuf,
}

const WORKFLOW: &str = r#"version: 1
name: ad-reset
purpose: reset
limits: { idle: 5m, absolute: 15m }
directory:
  plugin: active-directory
  grants: { ldap: [corp-ad] }
  limits: { wall_time: 10s }
  config: { connection: corp-ad, base: "DC=example,DC=test", return_attributes: [mail, displayName] }
lockout:
  plugin: example-lockout
  config: { threshold: 3, lockout_ms: [900000], max_lockouts: 3 }
gates:
  - id: code
    plugin: static-answer
    config: { answer: "123456" }
password:
  min_length: 8
  max_length: 64
  reject_user_name: true
"#;

impl Lab {
    fn start() -> Lab {
        let dc = SambaDc::start();
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        let workflows = dir.path().join("workflows");
        for sub in [&plugins, &workflows] {
            std::fs::create_dir_all(sub).unwrap();
        }
        for name in ["active-directory", "example-lockout", "static-answer"] {
            std::fs::copy(wasm(name), plugins.join(format!("{name}.wasm"))).unwrap();
        }
        std::fs::write(workflows.join("ad-reset.yaml"), WORKFLOW).unwrap();
        // The same, but the new password must be changed at next logon.
        let temp = WORKFLOW
            .replace("name: ad-reset", "name: ad-temporary")
            .replace(
                "  reject_user_name: true\n",
                "  reject_user_name: true\n  must_change: true\n",
            );
        std::fs::write(workflows.join("ad-temporary.yaml"), temp).unwrap();
        let secret = dir.path().join("ad-bind.secret");
        std::fs::write(&secret, format!("{}\n", samba::ADMIN_PASSWORD)).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = write_config(
            dir.path(),
            &format!(
                "secrets:\n  ad-bind: {{ file: {secret:?} }}\n\
                 ldap:\n  {CONNECTION}:\n    url: {:?}\n    flavor: active-directory\n    \
                 ca_file: {:?}\n    bind_dn: {:?}\n    bind_secret: ad-bind\n",
                samba::LDAPS_URL,
                dc.ca(),
                samba::ADMIN,
            ),
        );
        Lab {
            dc,
            _dir: dir,
            config,
        }
    }

    fn gateway(&self) -> Portal {
        Portal {
            gw: Gateway::start_config(&self.config, &[]),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// A plugin host with the config's capabilities (the `corp-ad`
    /// connection), and the `active-directory` plugin loaded as a step
    /// granted that connection would load it.
    fn host(&self) -> (PluginHost, Plugin, tempfile::TempDir) {
        let (host, cache) = resetgate_tests::host();
        let config = GatewayConfig::load(&self.config).unwrap();
        host.set_capabilities(Arc::new(Capabilities::from_config(&config, None).unwrap()));
        let plugin = host
            .load(
                &wasm("active-directory"),
                &LoadSpec {
                    kind: Some(PluginKind::Directory),
                    grants: Grants {
                        ldap: vec![CONNECTION.to_owned()],
                        ..Grants::default()
                    },
                    limits: Limits {
                        wall_time: Duration::from_secs(10),
                        ..Limits::default()
                    },
                },
            )
            .unwrap();
        (host, plugin, cache)
    }
}

/// The AD step's call context.
fn ctx(config: Value) -> CallContext {
    CallContext {
        flow_id: "flow-ad".into(),
        workflow: "ad-reset".into(),
        step: "directory".into(),
        config: config.to_string(),
        now_ms: 1_763_856_000_000,
        language: String::new(),
    }
}

fn ad_config() -> Value {
    json!({"connection": CONNECTION, "base": samba::BASE_DN, "return_attributes": ["mail"]})
}

/// A gateway over plain HTTP on loopback and a client for it.
struct Portal {
    gw: Gateway,
    agent: ureq::Agent,
}

/// One response: status, body as sent, body as JSON.
struct Reply {
    status: u16,
    raw: String,
    json: Value,
}

impl Portal {
    fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.gw.base_url()))
            .content_type("application/json");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.send(body.to_string()).unwrap();
        let raw = resp.body_mut().read_to_string().unwrap();
        Reply {
            status: resp.status().as_u16(),
            json: serde_json::from_str(&raw).unwrap_or(Value::Null),
            raw,
        }
    }

    /// Starts an `ad-reset` flow for `user`: (id, token, reply).
    fn begin(&self, user: &str) -> (String, String, Reply) {
        self.begin_in("ad-reset", user)
    }

    /// Starts a flow of `workflow` for `user`: (id, token, reply).
    fn begin_in(&self, workflow: &str, user: &str) -> (String, String, Reply) {
        let r = self.post(
            "/v1/flows",
            None,
            json!({"workflow": workflow, "user": user}),
        );
        assert_eq!(r.status, 201, "{}", r.raw);
        let id = r.json["id"].as_str().unwrap().to_owned();
        let token = r.json["token"].as_str().unwrap().to_owned();
        (id, token, r)
    }

    fn answer(&self, id: &str, token: &str, view: &Value, answer: &str) -> Reply {
        self.post(
            &format!("/v1/flows/{id}/answers"),
            Some(token),
            json!({
                "gate": view["prompt"]["gate"],
                "round": view["prompt"]["round"],
                "answers": { "answer": answer },
            }),
        )
    }

    fn password(&self, id: &str, token: &str, password: &str) -> Reply {
        self.post(
            &format!("/v1/flows/{id}/password"),
            Some(token),
            json!({ "password": password }),
        )
    }
}

/// The body with the per-flow values blanked: id, token, expiry.
fn masked(r: &Reply) -> String {
    let mut v = r.json.clone();
    for k in ["id", "token", "expires_at"] {
        v[k] = json!("*");
    }
    v.to_string()
}

#[test]
fn a_full_reset_sets_unicode_pwd_so_the_new_password_binds_and_the_old_does_not() {
    let lab = Lab::start();
    let p = lab.gateway();
    // Found by userPrincipalName (the flow below completes only for a
    // real account: a decoy never passes its gate).
    let (id, token, started) = p.begin("jdoe@example.test");
    let r = p.answer(&id, &token, &started.json, CODE);
    assert_eq!(r.json["state"], "awaiting-password", "{}", r.raw);
    let r = p.password(&id, &token, "Reset-Passw0rd2!");
    assert_eq!(r.json["state"], "completed", "{}", r.raw);
    assert_eq!(r.json["receipt"]["directory"], "ok", "{}", r.raw);

    let dc = &lab.dc;
    assert_eq!(dc.binds("jdoe@example.test", "Reset-Passw0rd2!"), Ok(true));
    assert_eq!(
        dc.binds("jdoe@example.test", samba::JDOE_PASSWORD),
        Ok(false),
        "the old password must no longer bind"
    );
    // A self-service reset does not force another change.
    assert_ne!(dc.value(samba::JDOE_DN, "pwdLastSet").as_deref(), Some("0"));
    // Neither password is in the gateway's log.
    let logs = p.gw.logs();
    assert!(!logs.contains("Reset-Passw0rd2!") && !logs.contains(samba::JDOE_PASSWORD));
}

#[test]
fn a_workflow_that_forces_a_change_leaves_pwd_last_set_at_zero() {
    let lab = Lab::start();
    let p = lab.gateway();
    let (id, token, started) = p.begin_in("ad-temporary", "jdoe");
    let r = p.answer(&id, &token, &started.json, CODE);
    assert_eq!(r.json["state"], "awaiting-password", "{}", r.raw);
    let r = p.password(&id, &token, "Temporary-Passw0rd3!");
    assert_eq!(r.json["state"], "completed", "{}", r.raw);

    let dc = &lab.dc;
    assert_eq!(dc.value(samba::JDOE_DN, "pwdLastSet").as_deref(), Some("0"));
    // AD refuses a logon with it until it is changed (data 773), and the
    // old password is gone.
    let refused = dc
        .search_as(
            "jdoe@example.test",
            "Temporary-Passw0rd3!",
            samba::BASE_DN,
            "base",
            "(objectClass=*)",
            &["dn"],
        )
        .unwrap_err();
    assert!(refused.contains("data 773"), "{refused}");
    assert_eq!(
        dc.binds("jdoe@example.test", samba::JDOE_PASSWORD),
        Ok(false)
    );
}

#[test]
fn a_password_ad_refuses_reaches_the_user_and_the_flow_can_set_another() {
    let lab = Lab::start();
    let p = lab.gateway();
    let (id, token, started) = p.begin("jdoe");
    let r = p.answer(&id, &token, &started.json, CODE);
    assert_eq!(r.json["state"], "awaiting-password", "{}", r.raw);

    // Long enough for the workflow, but AD's complexity rule refuses it.
    let r = p.password(&id, &token, "plainlowercaseonly");
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.json["state"], "awaiting-password", "{}", r.raw);
    assert_eq!(r.json["notice"]["code"], "directory-refused", "{}", r.raw);
    // AD's reason is for the admin: in the log, not in the answer.
    assert!(!r.raw.contains("0000052D"), "{}", r.raw);
    let logs = p.gw.wait_for_log("0000052D");
    assert!(
        logs.contains("0000052D"),
        "AD's reason must reach the log:\n{logs}"
    );
    assert_eq!(
        lab.dc.binds("jdoe@example.test", samba::JDOE_PASSWORD),
        Ok(true),
        "a refused password changes nothing"
    );

    let r = p.password(&id, &token, "Accepted-Passw0rd5!");
    assert_eq!(r.json["state"], "completed", "{}", r.raw);
    assert_eq!(
        lab.dc.binds("jdoe@example.test", "Accepted-Passw0rd5!"),
        Ok(true)
    );
}

#[test]
fn a_disabled_account_gets_the_decoy_flow_and_fails_at_the_gate() {
    let lab = Lab::start();
    let p = lab.gateway();
    let before = lab.dc.value(samba::MDIS_DN, "pwdLastSet");
    let (_, _, known) = p.begin("jdoe");
    let (did, dtoken, disabled) = p.begin("mdis");
    let (_, _, unknown) = p.begin("nobody-by-this-name");
    for (name, r) in [("disabled", &disabled), ("unknown", &unknown)] {
        assert_eq!(r.status, known.status, "{name}");
        assert_eq!(masked(r), masked(&known), "{name}");
        assert_eq!(r.raw.len(), known.raw.len(), "{name}");
    }
    // The right code does not get the disabled account through.
    let r = p.answer(&did, &dtoken, &disabled.json, CODE);
    assert_eq!(r.json["state"], "gate", "{}", r.raw);
    assert_eq!(r.json["notice"]["code"], "not-verified", "{}", r.raw);
    assert_eq!(lab.dc.value(samba::MDIS_DN, "pwdLastSet"), before);
}

#[test]
fn the_plugin_forces_a_change_expires_unlocks_and_verifies_against_ad() {
    let lab = Lab::start();
    let dc = &lab.dc;
    let (_host, plugin, _cache) = lab.host();
    let ad = plugin.directory().unwrap();
    let c = ctx(ad_config());
    assert!(ad.reachable(&c).unwrap());

    let user = ad.find_user(&c, "jdoe").unwrap().unwrap().unwrap();
    assert_eq!(user.name, "jdoe");
    assert_eq!(
        user.attributes,
        [("mail".to_owned(), "jdoe@example.test".to_owned())]
    );
    let by_upn = ad
        .find_user(&c, " JDOE@example.test ")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(by_upn.id, user.id, "the same account by its UPN");
    for name in [
        "mdis",
        "mdis@example.test",
        "*",
        "jdoe)(sAMAccountName=*",
        "nobody",
    ] {
        assert_eq!(ad.find_user(&c, name).unwrap().unwrap(), None, "{name}");
    }

    // verify-password binds as the account.
    let secret = |s: &str| Secret::from(s);
    assert!(
        ad.verify_password(&c, &user, &secret(samba::JDOE_PASSWORD))
            .unwrap()
            .unwrap()
    );
    assert!(
        !ad.verify_password(&c, &user, &secret("Not-It-Passw0rd!"))
            .unwrap()
            .unwrap()
    );

    // must-change: the password is set and pwdLastSet is 0, so AD refuses
    // a logon until it is changed (data 773).
    ad.set_password(&c, &user, &secret("Temp-Passw0rd4!"), true)
        .unwrap()
        .unwrap();
    assert_eq!(dc.value(samba::JDOE_DN, "pwdLastSet").as_deref(), Some("0"));
    let refused = dc
        .search_as(
            "jdoe@example.test",
            "Temp-Passw0rd4!",
            samba::BASE_DN,
            "base",
            "(objectClass=*)",
            &["dn"],
        )
        .unwrap_err();
    assert!(refused.contains("data 773"), "{refused}");

    // Without must-change the password works at once; expire sets pwdLastSet=0.
    ad.set_password(&c, &user, &secret("Fresh-Passw0rd6!"), false)
        .unwrap()
        .unwrap();
    assert_eq!(dc.binds("jdoe@example.test", "Fresh-Passw0rd6!"), Ok(true));
    assert_ne!(dc.value(samba::JDOE_DN, "pwdLastSet").as_deref(), Some("0"));
    ad.expire_password(&c, &user).unwrap().unwrap();
    assert_eq!(dc.value(samba::JDOE_DN, "pwdLastSet").as_deref(), Some("0"));
    ad.set_password(&c, &user, &secret("Fresh-Passw0rd7!"), false)
        .unwrap()
        .unwrap();

    // AD's own lockout: the right password is refused (data 775) until
    // unlock clears lockoutTime.
    dc.lock_out("jdoe@example.test");
    assert_ne!(
        dc.value(samba::JDOE_DN, "lockoutTime").as_deref(),
        Some("0")
    );
    let locked = dc
        .search_as(
            "jdoe@example.test",
            "Fresh-Passw0rd7!",
            samba::BASE_DN,
            "base",
            "(objectClass=*)",
            &["dn"],
        )
        .unwrap_err();
    assert!(locked.contains("data 775"), "{locked}");
    ad.unlock(&c, &user).unwrap().unwrap();
    assert_eq!(
        dc.value(samba::JDOE_DN, "lockoutTime").as_deref(),
        Some("0")
    );
    assert_eq!(dc.binds("jdoe@example.test", "Fresh-Passw0rd7!"), Ok(true));

    // A reset also unlocks (unlock_on_reset, on by default), so a
    // locked-out person can log on with the new password at once.
    dc.lock_out("jdoe@example.test");
    ad.set_password(&c, &user, &secret("After-Lockout8!"), false)
        .unwrap()
        .unwrap();
    assert_eq!(dc.binds("jdoe@example.test", "After-Lockout8!"), Ok(true));

    // A policy refusal is `rejected-by-policy` with AD's reason.
    let refused = ad
        .set_password(&c, &user, &secret("short"), false)
        .unwrap()
        .unwrap_err();
    match refused {
        SetPasswordFailure::RejectedByPolicy(reason) => {
            assert!(reason.contains("0000052D"), "{reason}")
        }
        other => panic!("expected a policy refusal, got {other:?}"),
    }

    // Once the account is disabled, nothing is done to it any more.
    dc.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n-\n",
        samba::JDOE_DN
    ));
    assert_eq!(ad.find_user(&c, "jdoe").unwrap().unwrap(), None);
    assert!(ad.unlock(&c, &user).unwrap().is_err());
    assert!(
        ad.set_password(&c, &user, &secret("Never-Set-Passw0rd9!"), false)
            .unwrap()
            .is_err()
    );
}

#[test]
fn a_second_dc_waits_until_the_first_has_exited() {
    let first = SambaDc::start();
    let first_pid = first.pid();
    let second = std::thread::spawn(|| {
        let dc = SambaDc::start();
        let answers = dc.binds("jdoe@example.test", samba::JDOE_PASSWORD);
        (dc, answers)
    });
    // The second start is blocked on the lock while the first DC serves.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        first.binds("jdoe@example.test", samba::JDOE_PASSWORD),
        Ok(true)
    );
    drop(first);
    let (dc, answers) = second.join().unwrap();
    assert!(
        !Path::new(&format!("/proc/{first_pid}")).exists(),
        "the second DC started before the first had exited"
    );
    assert_eq!(answers, Ok(true));
    assert_eq!(dc.stop().code(), Some(127));
}
