//! The self-service page in a real browser: the `resetgate` binary over
//! TLS, and headless Chromium driven through chromedriver (W3C WebDriver,
//! [`resetgate_tests::webdriver`]) the way a person uses the page — typing,
//! pressing Enter, clicking — through a complete reset.
//!
//! Chromium trusts exactly the gateway's certificate key
//! (`--ignore-certificate-errors-spki-list`), not every certificate. The
//! screenshot of the completed page is saved as the build artifact
//! `target/artifacts/self-service-completed.png`.

use std::path::Path;

use resetgate_tests::pki::Pki;
use resetgate_tests::webdriver::{Browser, ENTER, base64_encode};
use resetgate_tests::{Gateway, root, write_config};
use serde_json::{Value, json};

/// Two reset workflows (so the page offers a choice), with titles for
/// people in English and German: `page-reset` asks for the user's mail
/// address (a text field, labelled in both languages), then a code (a code
/// field); the FIM lockout with threshold 3; one sync target.
fn workflows(dir: &Path) {
    let reset = |name: &str, description: &str, title: &str| {
        format!(
            r#"version: 1
name: {name}
description: "{description} (for admins)"
title: {title}
purpose: reset
limits: {{ idle: 5m, absolute: 15m }}
directory:
  plugin: example-directory
  config: {{ users: [{{ name: alice, mail: alice@example.com }}, {{ name: bob, mail: bob@example.com }}] }}
lockout:
  plugin: example-lockout
  config: {{ threshold: 3, lockout_ms: [900000], max_lockouts: 3 }}
gates:
  - id: work-mail
    plugin: attribute-gate
    enrollment: none
    config:
      attribute: mail
      label: {{ en: Work e-mail address, de: Geschäftliche E-Mail-Adresse }}
      help: {{ en: "The address your work mail goes to.", de: "Die Adresse, an die Ihre dienstliche Post geht." }}
  - id: code
    plugin: static-answer
    config: {{ answer: "654321" }}
password:
  min_length: 12
  max_length: 64
  reject_user_name: true
sync:
  - id: mail
    plugin: example-sync
    mode: sync
    timeout: 5s
    on_failure: allow
"#
        )
    };
    std::fs::write(
        dir.join("page-reset.yaml"),
        reset(
            "page-reset",
            "Reset your password with your e-mail address and a code",
            "{ en: With your e-mail address and a code, de: Mit Ihrer E-Mail-Adresse und einem Code }",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("other-reset.yaml"),
        reset(
            "other-reset",
            "Reset your password another way",
            "Another way",
        ),
    )
    .unwrap();
}

/// The gateway over HTTPS with the page's workflows.
struct Site {
    gw: Gateway,
    pki: Pki,
    _dir: tempfile::TempDir,
}

impl Site {
    fn start() -> Site {
        Site::start_with(workflows, |_| {})
    }

    /// With the workflows `write` puts in the folder it is given, and
    /// `before` run with the config file before the gateway starts.
    fn start_with(write: impl FnOnce(&Path), before: impl FnOnce(&Path)) -> Site {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["plugins", "workflows"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        resetgate_tests::fixtures::copy_plugins(&dir.path().join("plugins"));
        write(&dir.path().join("workflows"));
        let pki = Pki::new();
        let file = write_config(dir.path(), &pki.tls_yaml(None));
        before(&file);
        let gw = Gateway::start_config(&file, &[]);
        assert!(gw.is_tls());
        Site { gw, pki, _dir: dir }
    }

    /// Chromium's flag trusting the gateway's certificate key, and only it:
    /// base64 of the sha256 of its SubjectPublicKeyInfo.
    fn trust_flag(&self) -> String {
        use rcgen::PublicKeyData;
        use sha2::Digest;
        let pem = std::fs::read_to_string(self.pki.key_file()).unwrap();
        let key = rcgen::KeyPair::from_pem(&pem).unwrap();
        let pin = base64_encode(&sha2::Sha256::digest(key.subject_public_key_info()));
        format!("--ignore-certificate-errors-spki-list={pin}")
    }

    /// A headless Chromium trusting the site's certificate, recording CSP
    /// violations from the first script on.
    fn browser(&self) -> Browser {
        let browser = Browser::start(&[self.trust_flag()]);
        browser.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": CSP_RECORDER }),
        );
        browser
    }
}

/// Installed before any script of every page: records each CSP violation
/// the browser reports, whatever caused it.
const CSP_RECORDER: &str = "window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) =>
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));";

/// The page as the test sees it.
struct Page<'a> {
    b: &'a Browser,
}

impl Page<'_> {
    fn js(&self, script: &str) -> Value {
        self.b.execute(script, vec![])
    }

    fn js_str(&self, script: &str) -> String {
        self.js(script).as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the page shows `step` and no request is under way.
    /// Waits until the page is at `step`, done loading, and its sections
    /// have finished fading in (WebDriver reads the text of an element at
    /// opacity 0 as empty, as a person would see nothing there yet).
    fn wait_step(&self, step: &str) {
        self.b.wait_until(
            &format!("step {step:?}"),
            &format!(
                "const m = document.querySelector('main'); \
                 return m.dataset.step === {step:?} && !m.hasAttribute('aria-busy') \
                 && document.getAnimations().length === 0;"
            ),
        );
    }

    /// Waits until the page is at `step` under `heading`.
    fn wait_heading(&self, step: &str, heading: &str) {
        self.wait_step(step);
        self.b.wait_until(
            &format!("heading {heading:?}"),
            &format!("return document.getElementById('heading').textContent === {heading:?};"),
        );
    }

    fn text(&self, selector: &str) -> String {
        self.b.text(&self.b.find(selector))
    }

    fn attr(&self, selector: &str, name: &str) -> Option<String> {
        self.b.attribute(&self.b.find(selector), name)
    }

    fn notice(&self) -> String {
        self.text("#notice")
    }

    /// The id of the focused element.
    fn focused(&self) -> String {
        self.js_str("return document.activeElement ? document.activeElement.id : '';")
    }

    /// Every visible form control has a label.
    fn assert_labelled(&self) {
        let unlabelled = self.js(
            "return [...document.querySelectorAll('input, select, textarea')]
               .filter((e) => e.checkVisibility() && e.labels.length === 0)
               .map((e) => e.id || e.name);",
        );
        assert_eq!(unlabelled, json!([]), "inputs without a <label>");
    }

    /// How many requests the page made to a URL ending in `suffix`.
    fn requests_to(&self, suffix: &str) -> u64 {
        self.js(&format!(
            "return performance.getEntriesByType('resource')
               .filter((e) => e.name.endsWith({suffix:?})).length;"
        ))
        .as_u64()
        .unwrap()
    }
}

#[test]
fn a_person_resets_a_password_in_the_browser() {
    let site = Site::start();
    let origin = site.gw.base_url();
    let browser = site.browser();
    let page = Page { b: &browser };
    let b = &browser;
    b.goto(&format!("{origin}/?workflow=page-reset"));

    // Start: two reset workflows, the one named in the URL preselected.
    b.wait_until(
        "the workflows to load",
        "return !document.getElementById('start-fields').disabled;",
    );
    page.wait_heading("start", "Reset your password");
    let select = b.find("#workflow");
    assert!(b.is_displayed(&select), "several workflows: a select");
    assert_eq!(
        page.js_str("return document.getElementById('workflow').value;"),
        "page-reset"
    );
    assert_eq!(b.find_all("#workflow option").len(), 2);
    // Offered by their titles for people, not the admins' descriptions.
    assert_eq!(
        page.text("#workflow option[value=page-reset]"),
        "With your e-mail address and a code"
    );
    // Only resetting is offered: no question what to do.
    assert!(!b.is_displayed(&b.find("#purpose-row")));
    assert_eq!(
        page.attr("#user", "autocomplete").as_deref(),
        Some("username")
    );
    page.assert_labelled();
    b.send_keys(&b.find("#user"), &format!("alice{ENTER}"));

    // The first gate: a text field; focus on the new step's heading.
    page.wait_heading("gate", "Work e-mail address");
    assert_eq!(page.focused(), "heading");
    assert_eq!(
        page.text("#gate-help"),
        "The address your work mail goes to."
    );
    assert_eq!(page.attr("#field-0", "type").as_deref(), Some("text"));
    assert_eq!(page.text("label[for=field-0]"), "Work e-mail address");
    page.assert_labelled();

    // A wrong answer: the generic message, still on the gate, the field
    // marked invalid and pointing at the message.
    b.send_keys(&b.find("#field-0"), &format!("bob@example.com{ENTER}"));
    b.wait_until(
        "the not-verified notice",
        "return document.getElementById('notice').textContent.includes('could not verify');",
    );
    page.wait_heading("gate", "Work e-mail address");
    assert_eq!(
        page.notice(),
        "We could not verify your identity. Check your answers and try again."
    );
    assert_eq!(
        page.attr("#field-0", "aria-invalid").as_deref(),
        Some("true")
    );
    assert!(
        page.attr("#field-0", "aria-describedby")
            .unwrap()
            .split(' ')
            .any(|id| id == "notice")
    );
    assert_eq!(page.focused(), "field-0", "focus back on the field");
    assert_eq!(page.attr("#notice", "aria-live").as_deref(), Some("polite"));

    // The right answer; the second gate asks for a code.
    b.send_keys(&b.find("#field-0"), &format!("alice@example.com{ENTER}"));
    page.wait_heading("gate", "Say the word");
    assert_eq!(page.notice(), "");
    assert_eq!(page.focused(), "heading");
    assert_eq!(
        page.attr("#field-0", "inputmode").as_deref(),
        Some("numeric")
    );
    assert_eq!(
        page.attr("#field-0", "autocomplete").as_deref(),
        Some("one-time-code")
    );
    b.send_keys(&b.find("#field-0"), &format!("654321{ENTER}"));

    // The new password: the rules shown, a confirmation field.
    page.wait_heading("password", "Choose a new password");
    assert_eq!(page.focused(), "heading");
    let rules = page.text("#password-rules");
    assert!(rules.contains("Use 12 to 64 characters"), "{rules}");
    assert!(rules.contains("Do not include your user name."), "{rules}");
    assert_eq!(
        page.attr("#new-password", "autocomplete").as_deref(),
        Some("new-password")
    );
    assert_eq!(
        page.attr("#new-password", "type").as_deref(),
        Some("password")
    );
    page.assert_labelled();

    // A mismatched confirmation is explained before anything is sent.
    b.send_keys(&b.find("#new-password"), "alice-in-wonderland");
    b.send_keys(&b.find("#confirm-password"), "alice-in-wonderlnd");
    b.click(&b.find("#password-submit"));
    b.wait_until(
        "the mismatch explained",
        "return !document.getElementById('confirm-password-error').hidden;",
    );
    assert!(
        page.text("#confirm-password-error")
            .contains("do not match")
    );
    assert_eq!(
        page.attr("#confirm-password", "aria-invalid").as_deref(),
        Some("true")
    );
    assert_eq!(page.requests_to("/password"), 0, "nothing sent");

    // A password that breaks a rule: the server's reason next to the field.
    let confirm = b.find("#confirm-password");
    b.clear(&confirm);
    b.send_keys(&confirm, &format!("alice-in-wonderland{ENTER}"));
    b.wait_until(
        "the rule broken",
        "return !document.getElementById('new-password-error').hidden;",
    );
    page.wait_step("password");
    assert_eq!(
        page.text("#new-password-error"),
        "The password must not contain your user name."
    );
    assert!(
        b.try_find("#new-password-error li[data-code=contains-user-name]")
            .is_some()
    );
    assert!(
        page.notice().contains("does not meet the rules"),
        "{}",
        page.notice()
    );
    assert_eq!(
        page.attr("#new-password", "aria-invalid").as_deref(),
        Some("true")
    );
    assert!(
        page.attr("#new-password", "aria-describedby")
            .unwrap()
            .contains("new-password-error")
    );
    assert_eq!(page.focused(), "new-password");
    assert!(
        page.text("#confirm-password-error").is_empty(),
        "mismatch cleared"
    );
    assert_eq!(page.requests_to("/password"), 1);

    // A good one.
    b.send_keys(&b.find("#new-password"), "purple monkey dishwasher");
    b.send_keys(&b.find("#confirm-password"), "purple monkey dishwasher");
    b.click(&b.find("#password-submit"));

    // Completed: the directory's and the sync target's status.
    page.wait_heading("done", "Your password has been changed");
    assert_eq!(page.focused(), "heading");
    assert_eq!(page.notice(), "Use your new password from now on.");
    let directory = "#receipt li[data-target=directory]";
    assert_eq!(page.attr(directory, "data-status").as_deref(), Some("ok"));
    assert_eq!(page.text(&format!("{directory} .status")), "Updated");
    let mail = "#receipt li[data-target=sync][data-id=mail]";
    assert_eq!(page.attr(mail, "data-status").as_deref(), Some("ok"));
    assert_eq!(page.text(&format!("{mail} .target")), "mail:");
    assert_eq!(page.text(&format!("{mail} .status")), "Updated");
    assert!(
        b.try_find("#receipt li[data-target=vpn]").is_none(),
        "no VPN in this workflow"
    );

    let artifacts = root().join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    std::fs::write(artifacts.join("self-service-completed.png"), png).unwrap();

    // The token was never put anywhere but a variable.
    assert_eq!(
        page.js(
            "return [localStorage.length, sessionStorage.length, document.cookie, location.href];"
        ),
        json!([0, 0, "", format!("{origin}/?workflow=page-reset")])
    );

    // Every request went to the gateway, and nothing broke the CSP.
    let resources = page.js("return performance.getEntriesByType('resource').map((e) => e.name);");
    let resources: Vec<&str> = resources
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for r in &resources {
        assert!(
            r.starts_with(&format!("{origin}/")),
            "a request to another origin: {r}"
        );
    }
    for path in ["/app.js", "/style.css", "/v1/workflows", "/v1/flows"] {
        assert!(
            resources.contains(&format!("{origin}{path}").as_str()),
            "{path} not among {resources:?}"
        );
    }
    assert_eq!(page.js("return window.__cspViolations;"), json!([]));
    let problems: Vec<Value> = b
        .console_log()
        .into_iter()
        .filter(|e| {
            e["level"] == "SEVERE"
                || e["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("Content Security Policy")
        })
        .collect();
    assert!(problems.is_empty(), "console errors: {problems:#?}");

    // Start again, from the keyboard.
    b.send_keys(&b.find("#restart"), ENTER);
    page.wait_heading("start", "Reset your password");
    assert_eq!(page.focused(), "heading");
    assert_eq!(
        page.js_str("return document.getElementById('user').value;"),
        "alice"
    );

    // The CSP checks above can fail: a violation is seen by both.
    page.js(
        "const img = document.createElement('img'); img.src = 'https://example.invalid/x.png'; \
         document.body.append(img);",
    );
    let seen = b.wait_until(
        "the deliberate violation to be recorded",
        "return window.__cspViolations.length && window.__cspViolations;",
    );
    assert!(
        seen[0]
            .as_str()
            .unwrap()
            .starts_with("img-src https://example.invalid"),
        "{seen}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut logged = vec![];
    while !logged.iter().any(|e: &Value| {
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("Content Security Policy")
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the deliberate violation is not in the console log: {logged:#?}"
        );
        logged.extend(b.console_log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_page_says_when_to_retry_and_can_start_over() {
    let site = Site::start();
    let browser = site.browser();
    let page = Page { b: &browser };
    let b = &browser;
    b.goto(&site.gw.base_url());
    b.wait_until(
        "the workflows to load",
        "return !document.getElementById('start-fields').disabled;",
    );
    // Without `?workflow=` the first one is chosen.
    assert_eq!(
        page.js_str("return document.getElementById('workflow').value;"),
        "other-reset"
    );
    b.send_keys(&b.find("#user"), "dave");
    // Five starts for one user name pass at once (then one every six
    // seconds); the person starts over from each first gate with the
    // keyboard until one is refused.
    let mut passed = 0;
    loop {
        b.send_keys(&b.find("#user"), ENTER);
        let outcome = b.wait_until(
            "the start to be answered",
            "const m = document.querySelector('main');
             if (m.hasAttribute('aria-busy')) return null;
             if (m.dataset.step === 'gate') return 'gate';
             return document.getElementById('notice').textContent.startsWith('Too many attempts')
               && 'refused';",
        );
        if outcome == "refused" {
            break;
        }
        passed += 1;
        assert!(passed <= 10, "never refused");
        page.wait_heading("gate", "Work e-mail address");
        b.send_keys(&b.find("#start-over"), ENTER);
        page.wait_heading("start", "Reset your password");
        assert_eq!(page.focused(), "heading");
    }
    assert!(passed >= 5, "{passed}");
    // The person is told when to try again.
    page.wait_step("start");
    let notice = page.notice();
    let secs: u64 = notice
        .strip_prefix("Too many attempts. Try again in ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{notice:?}"));
    assert!((1..=60).contains(&secs), "{notice}");
    assert!(
        notice.ends_with(" seconds.") || notice.ends_with(" second."),
        "{notice}"
    );
    assert_eq!(
        page.js_str("return document.getElementById('user').value;"),
        "dave"
    );
    assert_eq!(page.js("return window.__cspViolations;"), json!([]));
}

#[test]
fn a_person_registers_security_answers_in_the_browser() {
    let site = Site::start_with(resetgate_tests::fixtures::enrollment_workflows, |config| {
        resetgate_tests::fixtures::add_local_user(config, "erin", "the current password")
    });
    let browser = site.browser();
    let page = Page { b: &browser };
    let b = &browser;
    b.goto(&format!("{}/?workflow=enroll", site.gw.base_url()));
    b.wait_until(
        "the workflows to load",
        "return !document.getElementById('start-fields').disabled;",
    );
    page.wait_heading("start", "Set up password reset");
    // Resetting and registering are two errands, asked apart; the one the
    // URL names is chosen, and with one workflow each there is no select.
    assert!(b.is_displayed(&b.find("#purpose-row")));
    assert_eq!(
        page.js("return document.getElementById('purpose-enrollment').checked;"),
        json!(true)
    );
    assert!(!b.is_displayed(&b.find("#workflow")));
    b.click(&b.find("#purpose-reset"));
    page.wait_heading("start", "Reset your password");
    assert_eq!(
        page.js_str("return document.getElementById('workflow').value;"),
        "reset"
    );
    b.click(&b.find("#purpose-enrollment"));
    page.wait_heading("start", "Set up password reset");
    assert_eq!(
        page.js_str("return document.getElementById('workflow').value;"),
        "enroll"
    );
    b.send_keys(&b.find("#user"), &format!("erin{ENTER}"));

    // The current password first; a wrong one is not accepted.
    page.wait_heading("authenticate", "Confirm it is you");
    assert_eq!(page.focused(), "heading");
    assert_eq!(
        page.attr("#current-password", "autocomplete").as_deref(),
        Some("current-password")
    );
    page.assert_labelled();
    b.send_keys(
        &b.find("#current-password"),
        &format!("not the password{ENTER}"),
    );
    b.wait_until(
        "the not-verified notice",
        "return document.getElementById('notice').textContent.includes('could not verify');",
    );
    page.wait_step("authenticate");
    assert_eq!(
        page.attr("#current-password", "aria-invalid").as_deref(),
        Some("true")
    );
    assert_eq!(page.focused(), "current-password");
    b.send_keys(
        &b.find("#current-password"),
        &format!("the current password{ENTER}"),
    );

    // Then each answer to register, in a hidden field.
    for (question, answer) in [
        ("What was the name of your first pet?", "Rex the dog"),
        ("In which city were you born?", "Lisbon"),
    ] {
        page.wait_heading("gate", "Choose your answer");
        b.wait_until(
            &format!("the question {question:?}"),
            &format!(
                "return document.querySelector('label[for=field-0]').textContent === {question:?};"
            ),
        );
        assert_eq!(page.attr("#field-0", "type").as_deref(), Some("password"));
        assert_eq!(page.text("#gate-submit"), "Save");
        assert_eq!(page.focused(), "heading");
        page.assert_labelled();
        b.send_keys(&b.find("#field-0"), &format!("{answer}{ENTER}"));
    }
    page.wait_heading("done", "Your reset options are saved");
    assert_eq!(page.focused(), "heading");
    assert_eq!(
        page.notice(),
        "You can now reset your password yourself when you need to."
    );
    assert_eq!(page.js("return window.__cspViolations;"), json!([]));
}

#[test]
fn a_person_sees_a_key_to_copy_and_its_qr_code_while_registering() {
    use resetgate_tests::fixtures::{
        add_local_user, canary_uri, canary_workflows, copy_canary_gate, qr_rows,
    };
    let site = Site::start_with(canary_workflows, |config| {
        copy_canary_gate(&config.parent().unwrap().join("plugins"));
        add_local_user(config, "erin", "the current password");
    });
    let browser = site.browser();
    let page = Page { b: &browser };
    let b = &browser;
    b.goto(&format!("{}/?workflow=enroll-canary", site.gw.base_url()));
    b.wait_until(
        "the workflows to load",
        "return !document.getElementById('start-fields').disabled;",
    );
    b.send_keys(&b.find("#user"), &format!("erin{ENTER}"));
    page.wait_heading("authenticate", "Confirm it is you");
    b.send_keys(
        &b.find("#current-password"),
        &format!("the current password{ENTER}"),
    );
    page.wait_heading("gate", "Register your canary");

    // The text, then the key to copy in a fixed-width font, selectable whole.
    assert_eq!(
        page.text("#gate-display [data-display=text]"),
        "Scan the code with your app, or copy the key."
    );
    let canary = page.text("#gate-display [data-display=code] code");
    assert!(
        canary.starts_with("canary-") && canary.len() == 39,
        "{canary}"
    );
    let style = page.js(
        "const s = getComputedStyle(document.querySelector('#gate-display code'));
         return [s.fontFamily, s.userSelect];",
    );
    assert!(style[0].as_str().unwrap().contains("monospace"), "{style}");
    assert_eq!(style[1], "all");

    // The QR code: an SVG drawn from the gateway's modules, with a quiet
    // zone of 4, exactly the modules of the QR code of its text.
    let expected = qr_rows(&canary_uri("erin", &canary));
    let n = expected.len();
    let svg = page.js(
        "const svg = document.querySelector('#gate-display svg.qr-code');
         return { viewBox: svg.getAttribute('viewBox'), modules: svg.dataset.modules,
                  d: svg.querySelector('path').getAttribute('d'),
                  shown: svg.checkVisibility(), width: svg.getBoundingClientRect().width,
                  label: svg.getAttribute('aria-label') };",
    );
    assert_eq!(svg["viewBox"], format!("0 0 {} {}", n + 8, n + 8));
    assert_eq!(svg["modules"], n.to_string());
    assert_eq!(svg["shown"], true);
    assert!(svg["width"].as_f64().unwrap() >= 150.0, "{svg}");
    assert_eq!(svg["label"], "QR code");
    let mut drawn = vec![vec!['0'; n]; n];
    for square in svg["d"].as_str().unwrap().split('M').skip(1) {
        let xy = square.strip_suffix("h1v1h-1z").unwrap();
        let (x, y) = xy.split_once(' ').unwrap();
        let (x, y): (usize, usize) = (x.parse().unwrap(), y.parse().unwrap());
        drawn[y - 4][x - 4] = '1';
    }
    let drawn: Vec<String> = drawn.into_iter().map(|r| r.into_iter().collect()).collect();
    assert_eq!(drawn, expected, "the page draws the QR code's modules");
    // Nothing fetched for it, nothing the page's CSP refuses.
    let fetched = page.js(
        "return performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname)
           .filter((p) => !p.startsWith('/v1/') && !['/app.js', '/style.css', '/favicon.svg'].includes(p));",
    );
    assert_eq!(fetched, json!([]));
    page.assert_labelled();

    b.send_keys(&b.find("#field-0"), &format!("OK{ENTER}"));
    page.wait_heading("done", "Your reset options are saved");
    assert_eq!(page.js("return window.__cspViolations;"), json!([]));
}

/// The organisation's logo: a small SVG (a blue square).
const LOGO_SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40" viewBox="0 0 40 40"><rect width="40" height="40" fill="#0b5fff"/></svg>"##;

#[test]
fn the_page_speaks_german_with_the_organisations_branding() {
    let site = Site::start_with(workflows, |config| {
        let dir = config.parent().unwrap();
        std::fs::write(dir.join("logo.svg"), LOGO_SVG).unwrap();
        let mut text = std::fs::read_to_string(config).unwrap();
        text.push_str(
            "page:\n  name: Beispiel AG\n  logo: logo.svg\n  accent: \"#0b5fff\"\n  \
             helpdesk: { text: \"IT-Servicedesk: +49 30 1234-567\", url: \"tel:+49301234567\" }\n",
        );
        std::fs::write(config, text).unwrap();
    });
    let origin = site.gw.base_url();
    let browser = site.browser();
    let page = Page { b: &browser };
    let b = &browser;
    b.goto(&format!("{origin}/?lang=de&workflow=page-reset"));
    b.wait_until(
        "the workflows to load",
        "return !document.getElementById('start-fields').disabled;",
    );

    // The page in German: its own texts, and the workflows' titles.
    page.wait_heading("start", "Passwort zurücksetzen");
    assert_eq!(page.js_str("return document.documentElement.lang;"), "de");
    assert_eq!(page.text("label[for=user]"), "Benutzername");
    assert_eq!(page.text("#start-submit"), "Weiter");
    assert_eq!(
        page.text("#workflow-label"),
        "Wie möchten Sie bestätigen, dass Sie es sind?"
    );
    assert_eq!(
        page.text("#workflow option[value=page-reset]"),
        "Mit Ihrer E-Mail-Adresse und einem Code"
    );
    // A link to the page in English, keeping the workflow.
    let english = page.attr("a[data-lang=en]", "href").unwrap();
    assert_eq!(english, "?lang=en&workflow=page-reset");
    page.assert_labelled();

    // The branding: the name, the logo (loaded), the accent on buttons.
    assert_eq!(page.text("[data-testid=org-name]"), "Beispiel AG");
    assert_eq!(
        page.js("const i = document.querySelector('[data-testid=logo]'); return i.complete && i.naturalWidth;"),
        json!(40)
    );
    assert_eq!(
        page.js_str(
            "return getComputedStyle(document.getElementById('start-submit')).backgroundColor;"
        ),
        "rgb(11, 95, 255)"
    );
    // No help offered while nothing went wrong.
    assert!(!b.is_displayed(&b.find("#helpdesk")));

    // A message is said once: an empty name is marked at the field only.
    b.click(&b.find("#start-submit"));
    b.wait_until(
        "the field error",
        "return !document.getElementById('user-error').hidden;",
    );
    assert_eq!(
        page.text("#user-error"),
        "Geben Sie Ihren Benutzernamen ein."
    );
    assert_eq!(page.notice(), "");
    // Typing again clears what was said about the empty field.
    b.send_keys(&b.find("#user"), "a");
    assert!(!b.is_displayed(&b.find("#user-error")));
    assert_eq!(page.attr("#user", "aria-invalid"), None);
    b.send_keys(&b.find("#user"), &format!("lice{ENTER}"));

    // The gate plugin was told the language: its prompt is in German.
    page.wait_heading("gate", "Geschäftliche E-Mail-Adresse");
    assert_eq!(
        page.text("#gate-help"),
        "Die Adresse, an die Ihre dienstliche Post geht."
    );

    // A wrong answer: the gateway's notice in German. It is stale once the
    // person types again, and goes.
    b.send_keys(&b.find("#field-0"), &format!("bob@example.com{ENTER}"));
    b.wait_until(
        "the not-verified notice",
        "return document.getElementById('notice').textContent.includes('nicht bestätigen');",
    );
    page.wait_step("gate");
    assert_eq!(
        page.notice(),
        "Wir konnten Ihre Identität nicht bestätigen. Prüfen Sie Ihre Antworten und versuchen Sie es noch einmal."
    );
    assert_eq!(
        page.attr("#field-0", "aria-invalid").as_deref(),
        Some("true")
    );
    b.send_keys(&b.find("#field-0"), "a");
    assert_eq!(page.notice(), "");
    assert_eq!(page.attr("#field-0", "aria-invalid"), None);
    assert!(
        !page
            .attr("#field-0", "aria-describedby")
            .unwrap_or_default()
            .split(' ')
            .any(|id| id == "notice"),
        "the field no longer points at a message"
    );

    // Wrong until the lockout (threshold 3): the lockout screen in German,
    // its message once, and where to get help.
    for _ in 0..5 {
        if page.js_str("return document.querySelector('main').dataset.step;") == "done" {
            break;
        }
        b.clear(&b.find("#field-0"));
        b.send_keys(&b.find("#field-0"), &format!("bob@example.com{ENTER}"));
        b.wait_until(
            "the answer to be taken",
            "const m = document.querySelector('main');
             return !m.hasAttribute('aria-busy') && (m.dataset.step === 'done' || document.getElementById('notice').textContent !== '');",
        );
    }
    page.wait_heading("done", "Zu viele Versuche");
    assert_eq!(
        page.notice(),
        "Versuchen Sie es später noch einmal, oder wenden Sie sich an Ihren Helpdesk."
    );
    let main = page.text("main");
    assert_eq!(main.matches("Zu viele Versuche").count(), 1, "{main}");
    assert!(b.is_displayed(&b.find("#helpdesk")));
    assert_eq!(
        page.text("#helpdesk"),
        "Brauchen Sie Hilfe? IT-Servicedesk: +49 30 1234-567"
    );
    assert_eq!(
        page.attr("#helpdesk a", "href").as_deref(),
        Some("tel:+49301234567")
    );
    // Starting again hides the help.
    b.click(&b.find("#restart"));
    page.wait_heading("start", "Passwort zurücksetzen");
    assert!(!b.is_displayed(&b.find("#helpdesk")));
    assert_eq!(page.js("return window.__cspViolations;"), json!([]));
}

#[test]
fn the_page_follows_accept_language_and_falls_back_to_english() {
    let site = Site::start();
    let get = |query: &str, accept: Option<&str>| {
        let agent = site.pki.client(false);
        let mut req = ureq::http::Request::builder()
            .method("GET")
            .uri(format!("{}/{query}", site.gw.base_url()));
        if let Some(a) = accept {
            req = req.header("Accept-Language", a);
        }
        let mut resp = agent.run(req.body(()).unwrap()).unwrap();
        let lang = resp
            .headers()
            .get("content-language")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.body_mut().read_to_string().unwrap();
        (lang, body)
    };
    let (lang, body) = get("", Some("de-CH, de;q=0.9, en;q=0.5"));
    assert_eq!(lang.as_deref(), Some("de"));
    assert!(body.contains(r#"<html lang="de">"#));
    assert!(body.contains("<h1 id=\"heading\" tabindex=\"-1\">Passwort zurücksetzen</h1>"));
    // `?lang=` wins over the header.
    let (lang, body) = get("?lang=en", Some("de"));
    assert_eq!(lang.as_deref(), Some("en"));
    assert!(body.contains("<h1 id=\"heading\" tabindex=\"-1\">Reset your password</h1>"));
    // A language the page does not speak: English.
    let (lang, _) = get("?lang=fr", Some("fr-FR, it;q=0.8"));
    assert_eq!(lang.as_deref(), Some("en"));
    let (lang, _) = get("", None);
    assert_eq!(lang.as_deref(), Some("en"));
}
