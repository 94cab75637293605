//! The web dashboard as an administrator meets it: Debian's Chromium,
//! headless, with dev-admin's client certificate in its NSS database
//! (dev mode's PKCS#12 export, imported as a person would) and the dev CA
//! trusted, driven through ChromeDriver's WebDriver API. A screenshot of
//! each page is kept in `target/dashboard/`; an approval is made by
//! clicking its button. Plus, with curl: roles, and changes asked by
//! another site's page refused.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kmsp11_tests::{libkmsp11, root, run, Kmsd, PIN};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Headless Chromium under ChromeDriver, with a client certificate.
struct Browser {
    driver: Child,
    url: String,
    session: String,
    _home: tempfile::TempDir,
}

impl Browser {
    /// Chromium presenting dev identity `who`'s certificate to kmsd's
    /// admin listener, at `origin` (`https://localhost:PORT`).
    fn start(kmsd: &Kmsd, who: &str, origin: &str) -> Browser {
        for p in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(p).exists(),
                "{p} missing: apt-get install -y chromium chromium-driver (scripts/deps.sh does)"
            );
        }
        let home = tempfile::tempdir().unwrap();
        let nss = home.path().join(".pki/nssdb");
        std::fs::create_dir_all(&nss).unwrap();
        let db = format!("sql:{}", nss.display());
        // Dev mode's PKCS#12 export of the admin's certificate and key.
        let p12 = kmsd.dir.join(format!("{who}.p12"));
        assert!(p12.exists(), "dev mode wrote no {}", p12.display());
        let steps: [Vec<String>; 3] = [
            vec![
                "certutil".into(),
                "-N".into(),
                "-d".into(),
                db.clone(),
                "--empty-password".into(),
            ],
            vec![
                "pk12util".into(),
                "-i".into(),
                p12.display().to_string(),
                "-d".into(),
                db.clone(),
                "-W".into(),
                kmsd::dev::DEV_P12_PASSWORD.into(),
            ],
            vec![
                "certutil".into(),
                "-A".into(),
                "-d".into(),
                db.clone(),
                "-n".into(),
                "kmsp11-dev-ca".into(),
                "-t".into(),
                "C,,".into(),
                "-i".into(),
                kmsd.dir.join("ca.pem").display().to_string(),
            ],
        ];
        for s in &steps {
            let (ok, out) = run(Command::new(&s[0]).args(&s[1..]).env("HOME", home.path()));
            assert!(ok, "{}: {out}", s.join(" "));
        }
        // The certificate chosen for kmsd's origin without asking, as a
        // person's "remember this choice" (or the AutoSelectCertificateForUrls policy) does.
        let profile = home.path().join("profile");
        std::fs::create_dir_all(profile.join("Default")).unwrap();
        let prefs = json!({"profile": {"content_settings": {"exceptions": {"auto_select_certificate": {
            format!("{origin},*"): {"setting": {"filters": [{"ISSUER": {"CN": "kmsp11 dev CA"}}]}}
        }}}}});
        std::fs::write(profile.join("Default/Preferences"), prefs.to_string()).unwrap();

        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("HOME", home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("{url}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let mut b = Browser {
            driver,
            url,
            session: String::new(),
            _home: home,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("session id").to_string();
        b
    }

    /// A WebDriver command: its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let resp = match body {
            Some(b) => ureq::post(&url).send_json(b),
            None if method == "DELETE" => ureq::delete(&url).call(),
            None => ureq::get(&url).call(),
        };
        let v: Value = resp
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
            .body_mut()
            .read_json()
            .unwrap();
        v["value"].clone()
    }

    fn session(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn open(&self, url: &str) {
        self.call("POST", &self.session("/url"), Some(json!({"url": url})));
    }

    fn source(&self) -> String {
        self.call("GET", &self.session("/source"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The elements `css` selects.
    fn find(&self, css: &str) -> Vec<String> {
        let v = self.call(
            "POST",
            &self.session("/elements"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .unwrap_or(&vec![])
            .iter()
            .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
            .collect()
    }

    fn click(&self, element: &str) {
        self.call(
            "POST",
            &self.session(&format!("/element/{element}/click")),
            Some(json!({})),
        );
    }

    /// A PNG of the window, kept as `target/dashboard/NAME.png`.
    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call("GET", &self.session("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("screenshot"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = root().join("target/dashboard");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{name}.png"));
        std::fs::write(&p, png).unwrap();
        p
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.url, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn origin(kmsd: &Kmsd) -> String {
    kmsd.admin_origin()
}

fn tool(kmsd: &Kmsd, args: &str) -> (bool, String) {
    run(Command::new("pkcs11-tool")
        .arg("--module")
        .arg(libkmsp11())
        .args(["--token-label", "kms-a", "-l", "-p", PIN])
        .args(args.split_whitespace())
        .env("KMSP11_CONFIG", kmsd.client_config()))
}

/// The approval requests, as the auditor's kmsctl lists them.
fn requests(kmsd: &Kmsd) -> Vec<Value> {
    let (code, out) = kmsd.kmsctl("kmsctl-auditor.toml", &["approvals", "list", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

// dev-client's destroy waits for two approvals; dev-admin gives one by
// clicking Approve on the approvals page, dev-admin2 the other with
// kmsctl, and the destroy then succeeds.
#[test]
fn approval_through_the_page() {
    let kmsd = Kmsd::start();
    let (ok, out) = tool(
        &kmsd,
        "--keypairgen --key-type EC:prime256v1 --label doomed --id 0d",
    );
    assert!(ok, "{out}");
    let delete = "--delete-object --type privkey --id 0d";
    let (ok, out) = tool(&kmsd, delete);
    assert!(
        !ok && out.contains("(0x200)"),
        "CKR_FUNCTION_REJECTED expected: {out}"
    );
    let id = requests(&kmsd)[0]["id"].as_str().unwrap().to_string();

    let origin = origin(&kmsd);
    let b = Browser::start(&kmsd, "dev-admin", &origin);
    b.open(&format!("{origin}/ui"));
    let page = b.source();
    assert!(
        page.contains("dev-admin (admin)"),
        "not signed in by certificate: {page}"
    );
    b.screenshot("overview");
    b.open(&format!("{origin}/ui/approvals"));
    let buttons = b.find(&format!("button[data-url='/v1/approvals/{id}/approve']"));
    assert_eq!(buttons.len(), 1, "no Approve button: {}", b.source());
    b.screenshot("approvals-pending");
    b.click(&buttons[0]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = requests(&kmsd);
        if r[0]["approvers"] == json!(["dev-admin"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the click approved nothing: {r:?}\n{}",
            b.source()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The page reloads showing one approval of two, and no button for
    // someone who already approved.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.source().contains("1 of 2") {
        assert!(
            Instant::now() < deadline,
            "page not reloaded: {}",
            b.source()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(b.find("button[data-url$='/approve']").is_empty());
    b.screenshot("approvals-approved-once");
    for page in ["keys", "audit", "identities"] {
        b.open(&format!("{origin}/ui/{page}"));
        b.screenshot(page);
    }
    let records = std::fs::read_to_string(kmsd.dir.join("audit.log")).unwrap();
    assert!(
        records.contains("\"identity\":\"dev-admin\"")
            && records.contains("\"op\":\"approvals.approve\""),
        "no audit record of the page's approval"
    );
    let (code, out) = kmsd.kmsctl("kmsctl-admin2.toml", &["approvals", "approve", &id]);
    assert_eq!(code, 0, "{out}");
    let (ok, out) = tool(&kmsd, delete);
    assert!(ok, "{out}");
}

// The auditor sees the pages without buttons; a user gets 403.
#[test]
fn roles_on_the_pages() {
    let kmsd = Kmsd::start();
    let (ok, out) = tool(
        &kmsd,
        "--keypairgen --key-type EC:prime256v1 --label seen --id 0e",
    );
    assert!(ok, "{out}");
    let (code, page) = kmsd.admin_api("dev-auditor", "GET", "/ui/keys", None, &[]);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("seen") && !page.contains("data-url"),
        "{page}"
    );
    let (code, page) = kmsd.admin_api("dev-admin", "GET", "/ui/keys", None, &[]);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("/disable"), "{page}");
    let (code, page) = kmsd.admin_api("dev-user", "GET", "/ui", None, &[]);
    assert_eq!(code, 403, "{page}");
}

// A change asked by another site's page (the browser would present the
// administrator's certificate) is refused; kmsd's own origin is not.
#[test]
fn cross_site_changes_refused() {
    let kmsd = Kmsd::start();
    let (ok, out) = tool(
        &kmsd,
        "--keypairgen --key-type EC:prime256v1 --label target --id 0f",
    );
    assert!(ok, "{out}");
    let (_, keys) = kmsd.admin_api("dev-admin", "GET", "/v1/keys", None, &[]);
    let keys: Vec<Value> = serde_json::from_str(&keys).unwrap();
    let id = keys[0]["id"].as_str().unwrap();
    let path = format!("/v1/keys/{id}/disable");
    for h in ["Origin: https://evil.example", "Sec-Fetch-Site: cross-site"] {
        let (code, body) = kmsd.admin_api("dev-admin", "POST", &path, Some("{}"), &[h]);
        assert_eq!(code, 403, "{h}: {body}");
        assert!(body.contains("cross_origin"), "{body}");
    }
    let own = format!("Origin: {}", origin(&kmsd));
    let (code, body) = kmsd.admin_api(
        "dev-admin",
        "POST",
        &path,
        Some("{}"),
        &[&own, "Sec-Fetch-Site: same-origin"],
    );
    assert_eq!(code, 200, "{body}");
}
