//! OpenSC's pkcs11-tool through the proxy: the commands of
//! shared/reference/client-behaviour.md §2a, outputs checked.

use std::process::Command;

use kmsp11_tests::{have, run, Kmsd, PIN};

#[test]
fn pkcs11_tool_through_the_proxy() {
    if !have("pkcs11-tool") || !have("openssl") {
        panic!("pkcs11-tool and openssl are required: apt-get install -y opensc openssl");
    }
    let kmsd = Kmsd::start();
    let lib = kmsp11_tests::libkmsp11();
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    let tool = |args: &[&str]| {
        let mut c = Command::new("pkcs11-tool");
        c.arg("--module")
            .arg(&lib)
            .args(args)
            .env("KMSP11_CONFIG", kmsd.client_config())
            .current_dir(w);
        run(&mut c)
    };
    let t = |args: &[&str]| {
        let mut a = vec!["--token-label", "kms-a"];
        a.extend_from_slice(args);
        tool(&a)
    };

    let (ok, out) = tool(&["-L"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("token label        : kms-a") && out.contains("token label        : kms-b"),
        "{out}"
    );

    let (ok, out) = t(&[
        "-l",
        "-p",
        PIN,
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--id",
        "01",
        "--label",
        "rsa2048",
        "--usage-sign",
        "--usage-decrypt",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = t(&[
        "-l",
        "-p",
        PIN,
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "02",
        "--label",
        "ecp256",
        "--usage-sign",
        "--usage-derive",
    ]);
    assert!(ok, "{out}");

    let (ok, out) = t(&["-O", "-l", "-p", PIN]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Private Key Object; RSA") && out.contains("Private Key Object; EC"),
        "{out}"
    );
    // Without login only public objects are listed.
    let (ok, out) = t(&["-O"]);
    assert!(ok, "{out}");
    assert!(
        !out.contains("Private Key Object") && out.contains("Public Key Object; RSA"),
        "{out}"
    );

    // Sign with the HSM key, verify with pkcs11-tool and with software OpenSSL.
    std::fs::write(w.join("data.txt"), b"hello from kmsp11\n").unwrap();
    let (ok, out) = t(&[
        "--read-object",
        "--type",
        "pubkey",
        "--id",
        "01",
        "-o",
        "rsa.der",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run(Command::new("openssl")
        .args([
            "pkey", "-pubin", "-inform", "DER", "-in", "rsa.der", "-out", "rsa.pem",
        ])
        .current_dir(w));
    assert!(ok, "{out}");
    let (ok, out) = t(&[
        "-l",
        "-p",
        PIN,
        "--sign",
        "-m",
        "SHA256-RSA-PKCS",
        "--id",
        "01",
        "-i",
        "data.txt",
        "-o",
        "sig.rsa",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = t(&[
        "--verify",
        "-m",
        "SHA256-RSA-PKCS",
        "--id",
        "01",
        "-i",
        "data.txt",
        "--signature-file",
        "sig.rsa",
    ]);
    assert!(ok && out.contains("Signature is valid"), "{out}");
    let (ok, out) = run(Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "rsa.pem",
            "-signature",
            "sig.rsa",
            "data.txt",
        ])
        .current_dir(w));
    assert!(ok && out.contains("Verified OK"), "openssl: {out}");
    let (ok, out) = t(&[
        "-l",
        "-p",
        PIN,
        "--sign",
        "-m",
        "SHA256-RSA-PKCS-PSS",
        "--id",
        "01",
        "-i",
        "data.txt",
        "-o",
        "sig.pss",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run(Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "rsa.pem",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
            "-signature",
            "sig.pss",
            "data.txt",
        ])
        .current_dir(w));
    assert!(ok && out.contains("Verified OK"), "openssl PSS: {out}");
    // ECDSA over a SHA-256 digest: raw r||s, converted to DER for OpenSSL.
    let (ok, out) = run(Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-binary",
            "-out",
            "data.sha256",
            "data.txt",
        ])
        .current_dir(w));
    assert!(ok, "{out}");
    let (ok, out) = t(&[
        "-l",
        "-p",
        PIN,
        "--sign",
        "-m",
        "ECDSA",
        "--id",
        "02",
        "-i",
        "data.sha256",
        "-o",
        "sig.ec",
        "--signature-format",
        "openssl",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = t(&[
        "--read-object",
        "--type",
        "pubkey",
        "--id",
        "02",
        "-o",
        "ec.der",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run(Command::new("openssl")
        .args([
            "pkey", "-pubin", "-inform", "DER", "-in", "ec.der", "-out", "ec.pem",
        ])
        .current_dir(w));
    assert!(ok, "{out}");
    let (ok, out) = run(Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "ec.pem",
            "-signature",
            "sig.ec",
            "data.txt",
        ])
        .current_dir(w));
    assert!(ok && out.contains("Verified OK"), "openssl ECDSA: {out}");

    // --test: SoftHSM direct gets as far as SHA-256 OAEP (unsupported); the proxy must too.
    let (_, out) = t(&["-l", "-p", PIN, "--test"]);
    assert!(out.contains("all 4 digest functions seem to work"), "{out}");
    assert!(
        out.contains("RSA-PKCS: OK") && out.contains("RSA-PKCS-OAEP"),
        "{out}"
    );

    // -M equals SoftHSM direct on the same backend token.
    let (ok, proxied) = t(&["-M"]);
    assert!(ok, "{proxied}");
    let (ok, direct) = run(Command::new("pkcs11-tool")
        .args(["--module"])
        .arg(kmsp11_tests::softhsm_module())
        .args(["--token-label", "dev-a", "-M"])
        .env("SOFTHSM2_CONF", kmsd.softhsm_conf()));
    assert!(ok, "{direct}");
    assert_eq!(proxied, direct, "mechanism lists differ");
}
