//! OpenSC's pkcs11-tool through the proxy: the commands of
//! shared/reference/client-behaviour.md §2a, outputs checked (signatures
//! by software OpenSSL). One kmsd and one pair of keys (made by pkcs11-tool
//! itself) serve every test.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use kmsp11_tests::{have, run, Kmsd, PIN};

struct Fixture {
    kmsd: Kmsd,
    _tmp: tempfile::TempDir,
    /// Files shared by the tests: data, exported public keys.
    work: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        assert!(
            have("pkcs11-tool") && have("openssl"),
            "pkcs11-tool and openssl are required: apt-get install -y opensc openssl"
        );
        let tmp = tempfile::tempdir().unwrap();
        let f = Fixture {
            kmsd: Kmsd::start(),
            work: tmp.path().to_path_buf(),
            _tmp: tmp,
        };
        for (kind, id, label, usage) in [
            ("rsa:2048", "01", "rsa2048", "--usage-decrypt"),
            ("EC:prime256v1", "02", "ecp256", "--usage-derive"),
        ] {
            f.token_ok(&format!(
                "-l -p {PIN} --keypairgen --key-type {kind} --id {id} --label {label} --usage-sign {usage}"
            ));
            f.token_ok(&format!("--read-object --type pubkey --id {id} -o {label}.der"));
            f.openssl(&format!("pkey -pubin -inform DER -in {label}.der -out {label}.pem"));
        }
        std::fs::write(f.work.join("data.txt"), b"hello from kmsp11\n").unwrap();
        f.openssl("dgst -sha256 -binary -out data.sha256 data.txt");
        f
    })
}

impl Fixture {
    /// pkcs11-tool on libkmsp11.so.
    fn tool(&self, args: &[&str]) -> (bool, String) {
        let mut c = Command::new("pkcs11-tool");
        c.arg("--module")
            .arg(kmsp11_tests::libkmsp11())
            .args(args)
            .env("KMSP11_CONFIG", self.kmsd.client_config())
            .current_dir(&self.work);
        run(&mut c)
    }

    /// pkcs11-tool on the virtual token kms-a, with a command line of
    /// arguments without spaces.
    fn token(&self, args: &str) -> (bool, String) {
        let mut a = vec!["--token-label", "kms-a"];
        a.extend(args.split_whitespace());
        self.tool(&a)
    }

    /// [`Fixture::token`], which must succeed.
    fn token_ok(&self, args: &str) -> String {
        let (ok, out) = self.token(args);
        assert!(ok, "pkcs11-tool {args}: {out}");
        out
    }

    /// `pkcs11-tool -l --sign` with the rest of a command line; it must succeed.
    fn sign(&self, args: &str) {
        self.token_ok(&format!("-l -p {PIN} --sign {args}"));
    }

    /// `openssl dgst -sha256 -verify` with the rest of a command line: OpenSSL
    /// must say "Verified OK".
    fn verified_by_openssl(&self, args: &str) {
        let out = self.openssl(&format!("dgst -sha256 -verify {args}"));
        assert!(out.contains("Verified OK"), "openssl {args}: {out}");
    }

    /// OpenSSL with a command line of arguments without spaces; it must succeed.
    fn openssl(&self, args: &str) -> String {
        let args: Vec<&str> = args.split_whitespace().collect();
        let (ok, out) = run(Command::new("openssl").args(&args).current_dir(&self.work));
        assert!(ok, "openssl {args:?}: {out}");
        out
    }
}

// -L: both virtual tokens.
#[test]
fn lists_both_tokens() {
    let (ok, out) = fixture().tool(&["-L"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("token label        : kms-a") && out.contains("token label        : kms-b"),
        "{out}"
    );
}

// Private keys only after login; public objects without it.
#[test]
fn lists_objects_with_and_without_login() {
    let f = fixture();
    let out = f.token_ok(&format!("-O -l -p {PIN}"));
    assert!(
        out.contains("Private Key Object; RSA") && out.contains("Private Key Object; EC"),
        "{out}"
    );
    let out = f.token_ok("-O");
    assert!(
        !out.contains("Private Key Object") && out.contains("Public Key Object; RSA"),
        "{out}"
    );
}

// SHA256-RSA-PKCS by the HSM key, verified by pkcs11-tool and by OpenSSL.
#[test]
fn rsa_signature_verified_by_openssl() {
    let f = fixture();
    f.sign("-m SHA256-RSA-PKCS --id 01 -i data.txt -o sig.rsa");
    let out =
        f.token_ok("--verify -m SHA256-RSA-PKCS --id 01 -i data.txt --signature-file sig.rsa");
    assert!(out.contains("Signature is valid"), "{out}");
    f.verified_by_openssl("rsa2048.pem -signature sig.rsa data.txt");
}

#[test]
fn pss_signature_verified_by_openssl() {
    let f = fixture();
    f.sign("-m SHA256-RSA-PKCS-PSS --id 01 -i data.txt -o sig.pss");
    f.verified_by_openssl(
        "rsa2048.pem -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 \
         -signature sig.pss data.txt",
    );
}

// ECDSA over a SHA-256 digest, in OpenSSL's DER format.
#[test]
fn ecdsa_signature_verified_by_openssl() {
    let f = fixture();
    f.sign("-m ECDSA --id 02 -i data.sha256 -o sig.ec --signature-format openssl");
    f.verified_by_openssl("ecp256.pem -signature sig.ec data.txt");
}

// --test: SoftHSM direct gets as far as SHA-256 OAEP (unsupported); the proxy must too.
#[test]
fn test_mode_gets_as_far_as_softhsm() {
    let (_, out) = fixture().token(&format!("-l -p {PIN} --test"));
    assert!(out.contains("all 4 digest functions seem to work"), "{out}");
    assert!(
        out.contains("RSA-PKCS: OK") && out.contains("RSA-PKCS-OAEP"),
        "{out}"
    );
}

// -M equals SoftHSM direct on the same backend token.
#[test]
fn mechanisms_equal_softhsm_direct() {
    let f = fixture();
    let proxied = f.token_ok("-M");
    let (ok, direct) = run(Command::new("pkcs11-tool")
        .args(["--module"])
        .arg(kmsp11_tests::softhsm_module())
        .args(["--token-label", "dev-a", "-M"])
        .env("SOFTHSM2_CONF", f.kmsd.softhsm_conf()));
    assert!(ok, "{direct}");
    assert_eq!(proxied, direct, "mechanism lists differ");
}
