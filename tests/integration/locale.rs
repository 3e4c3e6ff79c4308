//! The person's language through the portal API: chosen by `?lang=` or
//! `Accept-Language` (English when nothing matches), kept by the flow, and
//! given to its plugins; workflow titles for people in `/v1/workflows`.

use std::path::Path;

use resetgate_tests::Gateway;
use serde_json::{Value, json};

/// `locale-reset` (titled in English and German) asks for the mail address
/// through `attribute-gate`, labelled in both languages, then a new
/// password of 12 to 64 characters; `plain` has no title.
fn workflows(dir: &Path) {
    let common = r#"
directory:
  plugin: example-directory
  config: { users: [{ name: alice, mail: alice@example.com }] }
lockout:
  plugin: example-lockout
  config: { threshold: 5, lockout_ms: [900000], max_lockouts: 3 }
gates:
  - id: mail
    plugin: attribute-gate
    enrollment: none
    config:
      attribute: mail
      label: { en: Work e-mail address, de: Geschäftliche E-Mail-Adresse }
password: { min_length: 12, max_length: 64, reject_user_name: true }
"#;
    std::fs::write(
        dir.join("locale-reset.yaml"),
        format!(
            "version: 1\nname: locale-reset\ndescription: For admins only\n\
             title: {{ en: Reset with your e-mail address, de: Mit Ihrer E-Mail-Adresse zurücksetzen }}\n{common}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("plain.yaml"),
        format!("version: 1\nname: plain\n{common}"),
    )
    .unwrap();
}

struct Site {
    gw: Gateway,
    _dir: tempfile::TempDir,
}

impl Site {
    fn start() -> Site {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["plugins", "workflows", "data"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        resetgate_tests::fixtures::copy_plugins(&dir.path().join("plugins"));
        workflows(&dir.path().join("workflows"));
        let gw = Gateway::start_with(
            &dir.path().join("data"),
            &dir.path().join("plugins"),
            &dir.path().join("workflows"),
        );
        Site { gw, _dir: dir }
    }

    /// Sends a request with `Accept-Language: accept` if given; (status, JSON).
    fn send(
        &self,
        method: &str,
        path: &str,
        accept: Option<&str>,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.gw.base_url()));
        if let Some(a) = accept {
            req = req.header("Accept-Language", a);
        }
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let sent = match body {
            Some(b) => agent.run(
                req.header("Content-Type", "application/json")
                    .body(b.to_string().into_bytes())
                    .unwrap(),
            ),
            None => agent.run(req.body(()).unwrap()),
        };
        let mut resp = sent.unwrap();
        let status = resp.status().as_u16();
        let raw = resp.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&raw).unwrap_or(Value::Null))
    }

    fn titles(&self, query: &str, accept: Option<&str>) -> Vec<Value> {
        let (status, list) = self.send("GET", &format!("/v1/workflows{query}"), accept, None, None);
        assert_eq!(status, 200, "{list}");
        list["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| json!([w["name"], w["title"], w["description"]]))
            .collect()
    }

    /// Starts a flow for `user`; (id, token, view).
    fn start_flow(&self, query: &str, accept: Option<&str>, user: &str) -> (String, String, Value) {
        let (status, view) = self.send(
            "POST",
            &format!("/v1/flows{query}"),
            accept,
            None,
            Some(json!({"workflow": "locale-reset", "user": user})),
        );
        assert_eq!(status, 201, "{view}");
        (
            view["id"].as_str().unwrap().to_owned(),
            view["token"].as_str().unwrap().to_owned(),
            view,
        )
    }

    fn answer(&self, id: &str, token: &str, view: &Value, value: &str) -> Value {
        let (status, next) = self.send(
            "POST",
            &format!("/v1/flows/{id}/answers"),
            None,
            Some(token),
            Some(json!({
                "gate": view["prompt"]["gate"],
                "round": view["prompt"]["round"],
                "answers": { "value": value },
            })),
        );
        assert_eq!(status, 200, "{next}");
        next
    }
}

#[test]
fn workflow_titles_for_people_come_in_the_requests_language() {
    let site = Site::start();
    let de = json!([
        [
            "locale-reset",
            "Mit Ihrer E-Mail-Adresse zurücksetzen",
            "For admins only"
        ],
        ["plain", null, null],
    ]);
    let en = json!([
        [
            "locale-reset",
            "Reset with your e-mail address",
            "For admins only"
        ],
        ["plain", null, null],
    ]);
    assert_eq!(json!(site.titles("", Some("de-DE,de;q=0.9"))), de);
    assert_eq!(json!(site.titles("?lang=de", None)), de);
    assert_eq!(json!(site.titles("?lang=en", Some("de"))), en);
    assert_eq!(json!(site.titles("", Some("fr-FR, es;q=0.5"))), en);
    assert_eq!(json!(site.titles("", None)), en);
}

#[test]
fn a_flow_and_its_plugins_speak_the_language_it_started_in() {
    let site = Site::start();

    // Started in German (Accept-Language): the plugin's prompt in German.
    let (id, token, view) = site.start_flow("", Some("de-AT, en;q=0.5"), "alice");
    assert_eq!(
        view["prompt"]["title"], "Geschäftliche E-Mail-Adresse",
        "{view}"
    );
    assert_eq!(
        view["prompt"]["fields"][0]["label"],
        "Geschäftliche E-Mail-Adresse"
    );
    // The flow keeps it, whatever later requests ask for: the gateway's
    // notice in German.
    let wrong = site.answer(&id, &token, &view, "bob@example.com");
    assert_eq!(wrong["notice"]["code"], "not-verified");
    assert_eq!(
        wrong["notice"]["message"],
        "Wir konnten Ihre Identität nicht bestätigen. Prüfen Sie Ihre Antworten und versuchen Sie es noch einmal."
    );
    let next = site.answer(&id, &token, &wrong, "alice@example.com");
    assert_eq!(next["state"], "awaiting-password", "{next}");
    assert_eq!(
        next["password_policy"]["rules"][0],
        "Verwenden Sie 12 bis 64 Zeichen; Leerzeichen und beliebige Sonderzeichen sind erlaubt."
    );
    let (status, refused) = site.send(
        "POST",
        &format!("/v1/flows/{id}/password"),
        Some("en"),
        Some(&token),
        Some(json!({"password": "kurz"})),
    );
    assert_eq!(status, 200, "{refused}");
    assert_eq!(
        refused["notice"]["message"],
        "Dieses Passwort erfüllt die Regeln unten nicht. Wählen Sie ein anderes."
    );
    assert_eq!(refused["violations"][0]["code"], "too-short");
    assert_eq!(
        refused["violations"][0]["message"],
        "verwenden Sie mindestens 12 Zeichen"
    );

    // `?lang=` names the language too, and wins over the header.
    // (Unknown names get the same prompt, and leave alice's rate limit.)
    let (_, _, view) = site.start_flow("?lang=de", Some("en"), "carol");
    assert_eq!(view["prompt"]["title"], "Geschäftliche E-Mail-Adresse");
    // English when nothing matches, and by default.
    let (_, _, view) = site.start_flow("?lang=xx", Some("fr"), "carol");
    assert_eq!(view["prompt"]["title"], "Work e-mail address");
    let (id, token, view) = site.start_flow("", None, "alice");
    assert_eq!(view["prompt"]["title"], "Work e-mail address");
    let wrong = site.answer(&id, &token, &view, "bob@example.com");
    assert_eq!(
        wrong["notice"]["message"],
        "We could not verify your identity. Check your answers and try again."
    );

    // An unknown name in German looks like a known one in German.
    let (_, _, known) = site.start_flow("?lang=de", None, "alice");
    let (_, _, unknown) = site.start_flow("?lang=de", None, "nobody");
    assert_eq!(known["prompt"], unknown["prompt"]);
}
