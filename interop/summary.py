"""Prints the client x step x direct/proxy table; on a full run writes RESULTS.md.
Exits non-zero if any step failed or the proxied column differs from the direct one."""
import sys, datetime, subprocess

results, n_run, n_all, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows, order = {}, []
for line in open(results):
    client, step, col, res, note = (line.rstrip("\n").split("\t") + [""])[:5]
    key = (client, step)
    if key not in rows:
        rows[key] = {}
        order.append(key)
    rows[key][col] = res

table = ["| client | step | direct | proxy |", "|---|---|---|---|"]
bad = 0
for key in order:
    d, p = rows[key].get("direct", "missing"), rows[key].get("proxy", "missing")
    if "FAIL" in (d, p) or "missing" in (d, p) or (d != p and d != "-"):
        bad += 1
    table.append(f"| {key[0]} | {key[1]} | {d} | {p} |")
total = len(order)
summary = f"{total - bad} passed, {bad} failed"
print("\n".join(table))
print(f"\ninterop: {summary}")

if n_run == n_all:
    def version(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except Exception:
            return "?"
    notes = open(out.replace("RESULTS.md", "NOTES.md")).read()
    with open(out, "w") as f:
        f.write("# Interop results\n\n")
        f.write("Written by `interop/run-all`: every client against SoftHSM2 directly and through "
                "libkmsp11.so -> kmsd -> SoftHSM2, each column on a fresh token. A step passes only "
                "if its output was checked (signatures verified by software OpenSSL, ciphertexts "
                "decrypted, listings compared).\n\n")
        pkgs = version("dpkg-query -W -f='${Package} ${Version}, ' softhsm2 opensc libengine-pkcs11-openssl libnss3-tools gnutls-bin p11-kit openssh-client 2>/dev/null")
        f.write(f"Run {datetime.date.today()} with {version('openssl version')}; {version('java -version 2>&1')}; "
                f"{pkgs.rstrip(', ')}.\n\n")
        f.write(f"**{summary}.**\n\n")
        f.write("\n".join(table) + "\n\n")
        f.write(notes)
sys.exit(1 if bad else 0)
