//! Checks audit files, in order, as one chain: every line whole and a
//! record, sequence numbers consecutive, every `prev` the hash of the line
//! before, every checkpoint's signature good (and by the trusted key when
//! one is given), and the chain reaching the checkpoint kmsd last kept.

use std::fmt;
use std::path::PathBuf;

use ring::signature::{UnparsedPublicKey, ED25519};

use super::{checkpoint_message, line_hash, Record, GENESIS};

/// A chain that holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub checkpoints: u64,
}

/// The first place the chain breaks.
#[derive(Debug, PartialEq, Eq)]
pub struct Bad {
    pub file: PathBuf,
    /// 1-based line in `file`.
    pub line: usize,
    /// The sequence number of the record at fault.
    pub seq: u64,
    pub why: String,
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {}: record {}: {}",
            self.file.display(),
            self.line,
            self.seq,
            self.why
        )
    }
}

/// Verifies `files` as one chain. `trusted_key` (an Ed25519 public key) is
/// the only key whose checkpoints count; `expect` is a checkpoint kept
/// elsewhere (sequence, chain head) the files must reach, which is how
/// records cut off the end are found.
pub fn verify(
    files: &[PathBuf],
    trusted_key: Option<&[u8]>,
    expect: Option<(u64, &str)>,
) -> Result<Verified, Bad> {
    let mut contents = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read(path).map_err(|e| Bad {
            file: path.clone(),
            line: 0,
            seq: 0,
            why: format!("cannot read: {e}"),
        })?;
        contents.push((path.clone(), text));
    }
    verify_contents(&contents, trusted_key, expect)
}

/// [`verify`] over contents already read, each with the name to report.
pub fn verify_contents(
    files: &[(PathBuf, Vec<u8>)],
    trusted_key: Option<&[u8]>,
    expect: Option<(u64, &str)>,
) -> Result<Verified, Bad> {
    let mut v = Verified {
        records: 0,
        first_seq: 0,
        last_seq: 0,
        checkpoints: 0,
    };
    // The last good line: its file, line number, sequence and hash.
    let mut last: Option<(PathBuf, usize, u64, String)> = None;
    let mut reached = expect.is_none();
    for (path, text) in files {
        let mut at = 0;
        let mut n = 0;
        while at < text.len() {
            n += 1;
            let end = text[at..].iter().position(|b| *b == b'\n');
            let expected_seq = last.as_ref().map(|l| l.2 + 1);
            let bad = |why: String| Bad {
                file: path.clone(),
                line: n,
                seq: expected_seq.unwrap_or(1),
                why,
            };
            let Some(end) = end else {
                return Err(bad("the line is cut short (the file was truncated)".into()));
            };
            let line = &text[at..at + end];
            at += end + 1;
            let r: Record = serde_json::from_slice(line)
                .map_err(|e| bad(format!("not a record ({e}): edited")))?;
            match &last {
                None if r.seq == 1 && r.prev != GENESIS => {
                    return Err(bad("the first record does not start a chain".into()));
                }
                None => v.first_seq = r.seq,
                Some((file, line_no, seq, hash)) => {
                    if r.seq != seq + 1 {
                        let why = if r.seq > seq + 1 {
                            format!(
                                "missing: the next record is {} (deleted or reordered)",
                                r.seq
                            )
                        } else {
                            format!(
                                "out of order: found record {} here (inserted or reordered)",
                                r.seq
                            )
                        };
                        return Err(bad(why));
                    }
                    if &r.prev != hash {
                        return Err(Bad {
                            file: file.clone(),
                            line: *line_no,
                            seq: *seq,
                            why: "changed: the next record's hash of it does not match (edited, \
                                  or a record inserted after it)"
                                .into(),
                        });
                    }
                }
            }
            if let Some(cp) = &r.checkpoint {
                check_checkpoint(&r, cp, trusted_key).map_err(|why| Bad {
                    seq: r.seq,
                    ..bad(why)
                })?;
                v.checkpoints += 1;
            }
            if let Some((seq, head)) = expect {
                if r.seq == seq {
                    if r.prev != head {
                        return Err(Bad {
                            seq: r.seq,
                            ..bad("differs from the checkpoint kmsd kept".into())
                        });
                    }
                    reached = true;
                }
            }
            v.records += 1;
            v.last_seq = r.seq;
            last = Some((path.clone(), n, r.seq, line_hash(line)));
        }
    }
    if !reached {
        let (seq, _) = expect.unwrap_or_default();
        let (file, line) = last
            .map(|l| (l.0, l.1))
            .unwrap_or_else(|| (files.first().map(|f| f.0.clone()).unwrap_or_default(), 0));
        return Err(Bad {
            file,
            line,
            seq: v.last_seq + 1,
            why: format!("missing: the chain ends before record {seq}, which kmsd checkpointed (the file was cut)"),
        });
    }
    Ok(v)
}

fn check_checkpoint(
    r: &Record,
    cp: &super::CheckpointSig,
    trusted_key: Option<&[u8]>,
) -> Result<(), String> {
    let key = hex::decode(&cp.public_key).map_err(|_| "checkpoint key is not hex".to_string())?;
    if trusted_key.is_some_and(|t| t != key.as_slice()) {
        return Err("checkpoint signed by another key".into());
    }
    let sig =
        hex::decode(&cp.signature).map_err(|_| "checkpoint signature is not hex".to_string())?;
    UnparsedPublicKey::new(&ED25519, &key)
        .verify(&checkpoint_message(r.seq, &r.prev), &sig)
        .map_err(|_| "checkpoint signature does not verify".to_string())
}

#[cfg(test)]
mod tests {
    use super::super::{signer_from_seed, Chain};
    use super::*;
    use ring::signature::KeyPair;
    use std::path::Path;

    /// A chain of 10 records with a checkpoint after the 5th and at the end.
    fn written(dir: &Path) -> (PathBuf, Vec<u8>) {
        let path = dir.join("audit.log");
        let key = signer_from_seed(&[7; 32]).unwrap();
        let public = key.public_key().as_ref().to_vec();
        let mut c = Chain::open(&path).unwrap();
        for i in 0..10 {
            c.append(Record {
                identity: Some("app1".into()),
                op: Some("C_Sign".into()),
                rv: Some("CKR_OK".into()),
                request: Some(i),
                ..Default::default()
            })
            .unwrap();
            if i == 4 {
                c.checkpoint(Some(&key)).unwrap();
            }
        }
        c.checkpoint(Some(&key)).unwrap();
        c.sync().unwrap();
        (path, public)
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn rewrite(p: &Path, lines: &[String]) {
        std::fs::write(
            p,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    #[test]
    fn an_intact_chain_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = written(dir.path());
        let v = verify(&[p], Some(&key), None).unwrap();
        assert_eq!((v.records, v.last_seq, v.checkpoints), (12, 12, 2));
    }

    #[test]
    fn a_one_byte_edit_names_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = written(dir.path());
        let mut l = lines(&p);
        l[3] = l[3].replace("app1", "app2");
        rewrite(&p, &l);
        let bad = verify(&[p], Some(&key), None).unwrap_err();
        assert_eq!((bad.line, bad.seq), (4, 4), "{bad}");
    }

    #[test]
    fn a_deleted_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = written(dir.path());
        let mut l = lines(&p);
        l.remove(2);
        rewrite(&p, &l);
        let bad = verify(&[p], Some(&key), None).unwrap_err();
        assert_eq!(bad.seq, 3, "{bad}");
        assert!(bad.why.contains("missing"), "{bad}");
    }

    #[test]
    fn swapped_records_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = written(dir.path());
        let mut l = lines(&p);
        l.swap(6, 7);
        rewrite(&p, &l);
        let bad = verify(&[p], Some(&key), None).unwrap_err();
        assert_eq!((bad.line, bad.seq), (7, 7), "{bad}");
    }

    #[test]
    fn a_cut_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = written(dir.path());
        let text = std::fs::read(&p).unwrap();
        std::fs::write(&p, &text[..text.len() - 20]).unwrap();
        let bad = verify(&[p], Some(&key), None).unwrap_err();
        assert_eq!(bad.seq, 12, "{bad}");
        assert!(bad.why.contains("cut short"), "{bad}");
    }

    #[test]
    fn records_cut_off_the_end_are_found_by_the_kept_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = written(dir.path());
        let l = lines(&p);
        let last: Record = serde_json::from_str(&l[11]).unwrap();
        rewrite(&p, &l[..9]);
        let bad = verify(&[p], Some(&key), Some((12, &last.prev))).unwrap_err();
        assert_eq!(bad.seq, 10, "{bad}");
    }

    #[test]
    fn a_checkpoint_by_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = written(dir.path());
        let other = signer_from_seed(&[8; 32]).unwrap();
        let bad = verify(&[p], Some(other.public_key().as_ref()), None).unwrap_err();
        assert_eq!(bad.seq, 6, "{bad}");
    }

    #[test]
    fn a_chain_continues_after_reopening_and_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = written(dir.path());
        let mut c = Chain::open(&p).unwrap();
        assert_eq!(c.next_seq(), 13);
        c.append(Record::default()).unwrap();
        c.sync().unwrap();
        // Rotation: the first half in one file, the rest in the next.
        let l = lines(&p);
        let q = dir.path().join("audit.log.1");
        rewrite(&q, &l[..7]);
        rewrite(&p, &l[7..]);
        let v = verify(&[q, p], Some(&key), None).unwrap();
        assert_eq!(v.last_seq, 13);
    }
}
