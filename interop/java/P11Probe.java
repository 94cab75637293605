import java.security.*;
import java.security.cert.Certificate;
import java.security.spec.*;
import java.util.Arrays;
import javax.crypto.*;
import javax.crypto.spec.*;

/** Drives SunPKCS11 the way Java applications do; prints OK/FAIL per check, exits non-zero on any failure. */
public class P11Probe {
    static int failures = 0;

    static void check(String what, boolean ok) {
        System.out.println((ok ? "OK   " : "FAIL ") + what);
        if (!ok) failures++;
    }

    static void attempt(String what, Check c) {
        try {
            check(what, c.run());
        } catch (Exception e) {
            System.out.println("FAIL " + what + ": " + e);
            e.printStackTrace(System.out);
            failures++;
        }
    }

    interface Check {
        boolean run() throws Exception;
    }

    public static void main(String[] args) throws Exception {
        Provider p = Security.getProvider("SunPKCS11").configure(args[0]);
        Security.addProvider(p);
        KeyStore ks = KeyStore.getInstance("PKCS11", p);
        ks.load(null, args[1].toCharArray());
        byte[] data = "kmsp11 java interop".getBytes("UTF-8");
        PrivateKey rsa = (PrivateKey) ks.getKey("rsa2048", null);
        PublicKey rsaPub = ks.getCertificate("rsa2048").getPublicKey();
        PrivateKey ec = (PrivateKey) ks.getKey("ecp256", null);
        PublicKey ecPub = ks.getCertificate("ecp256").getPublicKey();
        check("keystore has rsa2048 and ecp256 private keys", rsa != null && ec != null);

        attempt("SHA256withRSA sign on token, verify on token and in software", () -> signVerify(p, "SHA256withRSA", rsa, rsaPub, "SunRsaSign", null, data));
        attempt("SHA256withECDSA sign on token, verify on token and in software", () -> signVerify(p, "SHA256withECDSA", ec, ecPub, "SunEC", null, data));
        PSSParameterSpec pss = new PSSParameterSpec("SHA-256", "MGF1", MGF1ParameterSpec.SHA256, 32, 1);
        attempt("RSASSA-PSS sign on token, verify in software", () -> signVerify(p, "RSASSA-PSS", rsa, rsaPub, "SunRsaSign", pss, data));
        attempt("RSA/ECB/PKCS1Padding: software encrypts, token decrypts", () -> {
            Cipher enc = Cipher.getInstance("RSA/ECB/PKCS1Padding", "SunJCE");
            enc.init(Cipher.ENCRYPT_MODE, rsaPub);
            byte[] ct = enc.doFinal(data);
            Cipher dec = Cipher.getInstance("RSA/ECB/PKCS1Padding", p);
            dec.init(Cipher.DECRYPT_MODE, rsa);
            return Arrays.equals(dec.doFinal(ct), data);
        });
        attempt("KeyPairGenerator RSA-2048 on token, signature verified in software", () -> {
            KeyPairGenerator g = KeyPairGenerator.getInstance("RSA", p);
            g.initialize(2048);
            KeyPair kp = g.generateKeyPair();
            return signVerify(p, "SHA256withRSA", kp.getPrivate(), kp.getPublic(), "SunRsaSign", null, data);
        });
        attempt("KeyPairGenerator EC secp256r1 on token, signature verified in software", () -> {
            KeyPairGenerator g = KeyPairGenerator.getInstance("EC", p);
            g.initialize(new ECGenParameterSpec("secp256r1"));
            KeyPair kp = g.generateKeyPair();
            return signVerify(p, "SHA256withECDSA", kp.getPrivate(), kp.getPublic(), "SunEC", null, data);
        });
        KeyGenerator kg = KeyGenerator.getInstance("AES", p);
        kg.init(256);
        SecretKey aes = kg.generateKey();
        attempt("AES/CBC/PKCS5Padding encrypt and decrypt on token", () -> {
            IvParameterSpec iv = new IvParameterSpec(new byte[16]);
            Cipher c = Cipher.getInstance("AES/CBC/PKCS5Padding", p);
            c.init(Cipher.ENCRYPT_MODE, aes, iv);
            byte[] ct = c.doFinal(data);
            c.init(Cipher.DECRYPT_MODE, aes, iv);
            return ct.length == 32 && Arrays.equals(c.doFinal(ct), data);
        });
        attempt("AES/GCM/NoPadding encrypt and decrypt on token (tag checked)", () -> {
            byte[] nonce = new byte[12];
            new SecureRandom().nextBytes(nonce);
            Cipher c = Cipher.getInstance("AES/GCM/NoPadding", p);
            c.init(Cipher.ENCRYPT_MODE, aes, new GCMParameterSpec(128, nonce));
            c.updateAAD("aad".getBytes("UTF-8"));
            byte[] ct = c.doFinal(data);
            c.init(Cipher.DECRYPT_MODE, aes, new GCMParameterSpec(128, nonce));
            c.updateAAD("aad".getBytes("UTF-8"));
            boolean roundTrip = Arrays.equals(c.doFinal(ct), data);
            ct[0] ^= 1;
            c.init(Cipher.DECRYPT_MODE, aes, new GCMParameterSpec(128, nonce));
            c.updateAAD("aad".getBytes("UTF-8"));
            boolean tamperRejected;
            try {
                c.doFinal(ct);
                tamperRejected = false;
            } catch (GeneralSecurityException e) {
                tamperRejected = true;
            }
            return ct.length == data.length + 16 && roundTrip && tamperRejected;
        });
        attempt("SecureRandom from the token", () -> {
            SecureRandom r = SecureRandom.getInstance("PKCS11", p);
            byte[] a = new byte[32], b = new byte[32];
            r.nextBytes(a);
            r.nextBytes(b);
            return !Arrays.equals(a, b);
        });
        attempt("SHA-256 on token equals software", () -> Arrays.equals(
                MessageDigest.getInstance("SHA-256", p).digest(data), MessageDigest.getInstance("SHA-256", "SUN").digest(data)));
        attempt("KeyStore.setEntry of a token AES key, then deleteEntry", () -> {
            ks.setEntry("java-aes", new KeyStore.SecretKeyEntry(aes), null);
            boolean stored = ks.containsAlias("java-aes") && ks.isKeyEntry("java-aes");
            ks.deleteEntry("java-aes");
            return stored && !ks.containsAlias("java-aes");
        });
        System.out.println(failures == 0 ? "ALL OK" : failures + " FAILED");
        System.exit(failures == 0 ? 0 : 1);
    }

    static boolean signVerify(Provider p, String alg, PrivateKey k, PublicKey pub, String soft, AlgorithmParameterSpec spec, byte[] data) throws Exception {
        Signature s = Signature.getInstance(alg, p);
        if (spec != null) s.setParameter(spec);
        s.initSign(k);
        s.update(data);
        byte[] sig = s.sign();
        Signature v = Signature.getInstance(alg, soft);
        if (spec != null) v.setParameter(spec);
        v.initVerify(pub);
        v.update(data);
        boolean software = v.verify(sig);
        boolean token = true;
        if (spec == null) {
            Signature t = Signature.getInstance(alg, p);
            t.initVerify(pub);
            t.update(data);
            token = t.verify(sig);
        }
        return software && token;
    }
}
