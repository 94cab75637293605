//! `kmsd --dev DIR`: a complete local setup in one folder (dev CA, server
//! and client certificates, a SoftHSM token store with two tokens, kmsd and
//! client configs), then serve. Reuses DIR if it was set up before.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The token-init script and SoftHSM template shared with the tests and CI.
const INIT_SCRIPT: &str = include_str!("../../softhsm/init-tokens.sh");
const SOFTHSM_TEMPLATE: &str = include_str!("../../softhsm/softhsm2.conf.in");
/// The dev policy: admins everything, users use keys, the auditor nothing.
pub const DEV_POLICY: &str = include_str!("dev-policy.cedar");

/// The dev identities: (name, role, library config file). The first is
/// the default client (`kmsp11.toml`, `client.pem`); dev-admin and
/// dev-admin2 are the two approvers kmsctl acts as.
pub const DEV_IDENTITIES: &[(&str, &str, &str)] = &[
    ("dev-client", "admin", "kmsp11.toml"),
    ("dev-admin", "admin", "kmsp11-admin.toml"),
    ("dev-admin2", "admin", "kmsp11-admin2.toml"),
    ("dev-user", "user", "kmsp11-user.toml"),
    ("dev-auditor", "auditor", "kmsp11-auditor.toml"),
];

/// The password of the dev admins' PKCS#12 files: for development only.
pub const DEV_P12_PASSWORD: &str = "kmsp11-dev";

/// The dev user PIN (softhsm/init-tokens.sh): for development only.
pub const DEV_PIN: &str = "123456";

/// Where Debian and others install SoftHSM's module.
pub const SOFTHSM_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// SoftHSM's module on this machine.
pub fn softhsm_module() -> Option<PathBuf> {
    SOFTHSM_PATHS.iter().map(PathBuf::from).find(|p| p.exists())
}

pub fn setup(dir: &Path, address: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let cfg = dir.join("kmsd.toml");
    if cfg.exists() {
        return Ok(cfg);
    }
    certificates(&dir)?;
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(INIT_SCRIPT)
        .arg("init-tokens.sh")
        .arg(dir.join("softhsm"))
        .args(["dev-a", "dev-b"])
        .env("KMSP11_SOFTHSM_TEMPLATE", SOFTHSM_TEMPLATE)
        .output()
        .map_err(|e| format!("running softhsm token init: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "softhsm token init failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let module = softhsm_module()
        .ok_or("libsofthsm2.so not found: apt-get install -y softhsm2")?
        .display()
        .to_string();
    let pin_hash = crate::pin::hash_pin(DEV_PIN.as_bytes())?;
    let mut t = String::new();
    let _ = write!(
        t,
        r#"# kmsd development configuration, written by `kmsd --dev`. Not for production.
[listen]
address = "{address}"
address_file = "address"
# The admin API (HTTPS, the same client certificates): kmsctl, curl, a browser.
admin_address = "{admin}"
admin_address_file = "admin-address"

[tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"
# kmsctl identities issue-cert signs client certificates with the dev CA.
issuing_ca_cert = "ca.pem"
issuing_ca_key = "ca.key"

[backend]
module = "{module}"
mode = "virtual"
env = {{ SOFTHSM2_CONF = "{softhsm}" }}

[[token]]
label = "kms-a"
backend_label = "dev-a"
pin_file = "softhsm/backend-pin"

[[token]]
label = "kms-b"
backend_label = "dev-b"
pin_file = "softhsm/backend-pin"

{identities}
[policy]
path = "policy.cedar"
# Creation constraints (these are the defaults):
min_rsa_bits = 2048
min_ec_bits = 256
min_aes_bits = 128

[store]
path = "kmsd.db"

[dual_control]
# Production guards all seven operations (the default when `guarded` is not
# given): "generate", "import", "export", "destroy", "policy-reload",
# "identity-change", "rotate". Dev mode guards destroying a token key, so that one
# person can try it: a destroy is refused (CKR_FUNCTION_REJECTED) until
# dev-admin and dev-admin2 approve it with kmsctl; the retry then succeeds once.
guarded = ["destroy"]
approvals = 2

[audit]
path = "audit.log"
fsync = "batch"
signing_key = "audit-signing.key"
"#,
        softhsm = dir.join("softhsm/softhsm2.conf").display(),
        admin = admin_address(address),
        identities = DEV_IDENTITIES
            .iter()
            .map(|(name, role, _)| format!(
                "[[identity]]\nname = \"{name}\"\nroles = [\"{role}\"]\ntokens = [\"kms-a\", \"kms-b\"]\n# PIN {DEV_PIN}\npin_hash = \"{pin_hash}\"\n\n"
            ))
            .collect::<String>(),
    );
    std::fs::write(dir.join("policy.cedar"), DEV_POLICY)
        .map_err(|e| format!("{}: {e}", dir.join("policy.cedar").display()))?;
    let seed = zeroize::Zeroizing::new(hex::encode(rand::random::<[u8; 32]>()));
    write_file(&dir.join("audit-signing.key"), seed.as_bytes(), true)?;
    std::fs::write(&cfg, t).map_err(|e| format!("{}: {e}", cfg.display()))?;
    Ok(cfg)
}

/// The admin API's address next to the PKCS#11 one: the next port, or any
/// free port when the PKCS#11 port is chosen by the system.
fn admin_address(address: &str) -> String {
    match address.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(p) if p != 0 && p < u16::MAX => format!("{host}:{}", p + 1),
            _ => format!("{host}:0"),
        },
        None => "127.0.0.1:0".into(),
    }
}

/// Writes the client config for the bound address and prints how to use it.
pub fn announce(dir: &Path, address: &str) -> Result<(), String> {
    let client = client_config(dir, address)?;
    let lib = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("libkmsp11.so")))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "target/release/libkmsp11.so".into());
    println!(
        "kmsd dev mode: serving virtual tokens kms-a and kms-b on {address} (user PIN {DEV_PIN})"
    );
    println!("Point a PKCS#11 client at it:");
    println!("  export KMSP11_CONFIG={}", client.display());
    println!("  pkcs11-tool --module {lib} -L");
    println!("  pkcs11-tool --module {lib} --token-label kms-a -l -p {DEV_PIN} --keypairgen --key-type EC:prime256v1 --label demo");
    println!("That is identity dev-client (role admin). The policy in {} lets a user only use keys; try:", dir.join("policy.cedar").display());
    println!("  KMSP11_CONFIG={} pkcs11-tool --module {lib} --token-label kms-a -l -p {DEV_PIN} --keygen --key-type AES:32 --label nope", dir.join("kmsp11-user.toml").display());
    println!("  (refused: CKR_KEY_FUNCTION_NOT_PERMITTED); kmsp11-admin.toml, kmsp11-admin2.toml and kmsp11-auditor.toml are the other identities.");
    if let Ok(admin) = std::fs::read_to_string(dir.join("admin-address")) {
        let port = admin
            .trim()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        let kmsctl = kmsctl_configs(dir, &admin)?;
        println!("Administer it with kmsctl (also kmsctl-admin2.toml, kmsctl-auditor.toml):");
        println!("  export KMSCTL_CONFIG={}", kmsctl.display());
        println!("  kmsctl status; kmsctl keys list");
        println!(
            "Dual control: destroying a token key (and a use a policy marks @approvals(\"2\"))"
        );
        println!("is refused until two admins (dev-admin, dev-admin2) approve; then the retry succeeds once:");
        println!("  pkcs11-tool --module {lib} --token-label kms-a -l -p {DEV_PIN} --delete-object --type privkey --label demo");
        println!("  kmsctl approvals list; kmsctl approvals approve ID");
        println!(
            "  KMSCTL_CONFIG={} kmsctl approvals approve ID",
            dir.join("kmsctl-admin2.toml").display()
        );
        println!(
            "or curl: curl --cacert {d}/ca.pem --cert {d}/dev-admin.pem --key {d}/dev-admin.key https://localhost:{port}/v1/status",
            d = dir.display()
        );
        println!(
            "Dashboard: https://localhost:{port}/ui with {d}/dev-admin.p12 (password {DEV_P12_PASSWORD}) imported in the browser and {d}/ca.pem trusted",
            d = dir.display()
        );
        println!("REST crypto API: https://localhost:{port}/kms/v1 (OpenAPI document: /kms/v1/openapi.json). Make a key as dev-admin, sign as dev-user:");
        for (who, path, body) in [
            (
                "dev-admin",
                "keys",
                r#"{"name":"demo-rest","type":"ec-p256"}"#,
            ),
            (
                "dev-user",
                "sign",
                r#"{"key":"demo-rest","input":"aGVsbG8="}"#,
            ),
        ] {
            println!(
                "  curl --cacert {d}/ca.pem --cert {d}/{who}.pem --key {d}/{who}.key -H 'content-type: application/json' -d '{body}' https://localhost:{port}/kms/v1/{path}",
                d = dir.display()
            );
        }
        println!("  (the answer's receipt is checked with /kms/v1/receipt-key: README, \"The REST crypto API\")");
    }
    let audit = dir.join("audit.log");
    println!(
        "Every call is recorded in {}; check the record with:",
        audit.display()
    );
    println!(
        "  kmsd audit verify --signing-key {} {}",
        dir.join("audit-signing.key").display(),
        audit.display()
    );
    Ok(())
}

/// Writes a kmsctl config for each dev admin and the auditor; returns the
/// first admin's.
pub fn kmsctl_configs(dir: &Path, admin_address: &str) -> Result<PathBuf, String> {
    let port = admin_address.trim().rsplit(':').next().unwrap_or_default();
    for (file, stem, name) in [
        ("kmsctl-admin.toml", "dev-admin", "dev-admin"),
        ("kmsctl-admin2.toml", "dev-admin2", "dev-admin2"),
        ("kmsctl-auditor.toml", "dev-auditor", "dev-auditor"),
    ] {
        let p = dir.join(file);
        let text = format!(
            "# kmsctl configuration for the kmsd dev instance in this folder, as {name}.\nurl = \"https://localhost:{port}\"\nca = \"{d}/ca.pem\"\ncert = \"{d}/{stem}.pem\"\nkey = \"{d}/{stem}.key\"\n",
            d = dir.display()
        );
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(dir.join("kmsctl-admin.toml"))
}

/// Writes a library config for each dev identity once the bound address
/// is known; returns the default one's path.
pub fn client_config(dir: &Path, address: &str) -> Result<PathBuf, String> {
    for (i, (name, role, file)) in DEV_IDENTITIES.iter().enumerate() {
        let stem = if i == 0 { "client" } else { name };
        let p = dir.join(file);
        let text = format!(
            r#"# libkmsp11 configuration for the kmsd dev instance in this folder,
# as identity {name} (role {role} in policy.cedar).
endpoints = ["{address}"]
server_name = "localhost"
ca = "{dir}/ca.pem"
cert = "{dir}/{stem}.pem"
key = "{dir}/{stem}.key"
"#,
            dir = dir.display()
        );
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(dir.join(DEV_IDENTITIES[0].2))
}

fn certificates(dir: &Path) -> Result<(), String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let err = |e: rcgen::Error| format!("certificate generation: {e}");
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name
        .push(DnType::CommonName, "kmsp11 dev CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;

    let issue = |name: &str, sans: Vec<String>, server: bool| -> Result<(String, String), String> {
        let key = KeyPair::generate().map_err(err)?;
        let mut p = CertificateParams::new(sans).map_err(err)?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let c = p.signed_by(&key, &ca_cert, &ca_key).map_err(err)?;
        Ok((c.pem(), key.serialize_pem()))
    };
    let (server, server_key) = issue(
        "localhost",
        vec!["localhost".into(), "127.0.0.1".into()],
        true,
    )?;
    let (client, client_key) = issue("dev-client", vec!["dev-client".into()], false)?;
    // A second client the config does not name: for refusal tests.
    let (other, other_key) = issue("stranger", vec!["stranger".into()], false)?;
    for (name, _, _) in &DEV_IDENTITIES[1..] {
        let (c, k) = issue(name, vec![name.to_string()], false)?;
        write_file(&dir.join(format!("{name}.pem")), c.as_bytes(), false)?;
        write_file(&dir.join(format!("{name}.key")), k.as_bytes(), true)?;
    }
    // The admins' certificates for a browser (the dashboard), as PKCS#12.
    for name in ["dev-admin", "dev-admin2"] {
        let p12 = dir.join(format!("{name}.p12"));
        let made = std::process::Command::new("openssl")
            .args(["pkcs12", "-export", "-name", name, "-passout"])
            .arg(format!("pass:{DEV_P12_PASSWORD}"))
            .arg("-in")
            .arg(dir.join(format!("{name}.pem")))
            .arg("-inkey")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(&p12)
            .output();
        match made {
            Ok(o) if o.status.success() => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&p12, std::fs::Permissions::from_mode(0o600));
            }
            _ => eprintln!(
                "note: {} not written (openssl pkcs12 failed or openssl missing)",
                p12.display()
            ),
        }
    }
    for (name, body, secret) in [
        ("ca.pem", ca_cert.pem(), false),
        ("ca.key", ca_key.serialize_pem(), true),
        ("server.pem", server, false),
        ("server.key", server_key, true),
        ("client.pem", client, false),
        ("client.key", client_key, true),
        ("stranger.pem", other, false),
        ("stranger.key", other_key, true),
    ] {
        write_file(&dir.join(name), body.as_bytes(), secret)?;
    }
    Ok(())
}

/// Writes a file; a secret one is created with mode 0600, never readable by others.
fn write_file(p: &Path, body: &[u8], secret: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(p)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    f.write_all(body)
        .map_err(|e| format!("{}: {e}", p.display()))
}
