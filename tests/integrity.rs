//! Issue 9, item 2: damaged files are never read silently. A checkpoint damaged in
//! its header, its metadata or its raw data makes `train --resume` fall back to the
//! previous checkpoint (saying so) or, without one, stop with an error that names
//! the damage; a damaged dataset file stops `train` naming the array.
mod common;
use common::*;
use std::path::Path;

fn tiny() -> String {
    repo().join("tests/configs/tiny.toml").display().to_string()
}

/// Inverts `len` bytes of `path` from `at`.
fn damage(path: &Path, at: usize, len: usize) {
    let mut b = std::fs::read(path).unwrap();
    for x in &mut b[at..at + len] {
        *x ^= 0xA5;
    }
    std::fs::write(path, b).unwrap();
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("pattern in the file")
}

/// Where the raw bytes of the largest parameter start in a checkpoint, and its name.
fn largest_param(ck: &Path) -> (usize, String) {
    let params = read_params(ck);
    let (name, values) = params.iter().max_by_key(|(_, v)| v.len()).unwrap();
    let bytes: Vec<u8> = values[..8].iter().flat_map(|v| v.to_le_bytes()).collect();
    (find(&std::fs::read(ck).unwrap(), &bytes), name.clone())
}

#[test]
fn a_damaged_checkpoint_falls_back_to_the_previous_one_or_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cut");
    // Checkpoints every 4 steps: the last one at step 8, the previous at step 4.
    let o = train_config(&tiny(), &out, &["--abort-after-step", "10"]);
    assert_eq!(o.status.code(), Some(86), "{}", text(&o));
    let ck = out.join("mpnn/checkpoint.h5");
    let prev = out.join("mpnn/checkpoint.prev.h5");
    let step = |p: &Path| {
        let f = hdf5::File::open(p).unwrap();
        zo_hpc::io::h5::read_attr::<u64>(&f, "step").unwrap()
    };
    assert_eq!((step(&ck), step(&prev)), (8, 4));
    let pristine = std::fs::read(&ck).unwrap();
    let bytes = pristine.clone();
    let (raw_at, raw_name) = largest_param(&ck);
    let cases = [
        ("header", 20, 4),
        ("metadata", find(&bytes, b"adam_t"), 3),
        ("raw data", raw_at + 16, 4),
    ];
    for (what, at, len) in cases {
        std::fs::write(&ck, &pristine).unwrap();
        let keep = out.join("keep.h5");
        std::fs::copy(&prev, &keep).unwrap();
        damage(&ck, at, len);
        let o = train_config(&tiny(), &out, &["--resume"]);
        assert_ok(&o);
        let log = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            log.contains("falling back to the previous checkpoint")
                && log.contains("checkpoint.prev.h5 at step 4"),
            "{what}: {log}"
        );
        if what == "raw data" {
            assert!(
                log.contains(&raw_name),
                "{what}: the damaged array is not named: {log}"
            );
        }
        std::fs::copy(&keep, &prev).unwrap();
    }
    // Without a previous checkpoint the damage is an error, never a resume.
    std::fs::write(&ck, &pristine).unwrap();
    std::fs::remove_file(&prev).unwrap();
    damage(&ck, raw_at + 16, 4);
    let o = train_config(&tiny(), &out, &["--resume"]);
    assert!(!o.status.success(), "a damaged checkpoint was resumed");
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        log.contains("checkpoint.h5") && log.contains(&raw_name) && !log.contains("resumed from"),
        "{log}"
    );
}

#[test]
fn a_damaged_dataset_file_is_refused_naming_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d");
    let o = zo(&["prepare", &tiny(), "--out-dir", out.to_str().unwrap()]);
    assert_ok(&o);
    let ds = out.join("dataset.h5");
    let pristine = std::fs::read(&ds).unwrap();
    let f = hdf5::File::open(&ds).unwrap();
    let target = f.dataset("target").unwrap().read_raw::<f64>().unwrap();
    drop(f);
    let bytes: Vec<u8> = target[..4].iter().flat_map(|v| v.to_le_bytes()).collect();
    let cases = [
        ("header", 20, 4, "dataset.h5"),
        (
            "metadata",
            find(&pristine, b"target_column"),
            3,
            "dataset.h5",
        ),
        ("raw data", find(&pristine, &bytes) + 8, 4, "/target"),
    ];
    for (what, at, len, named) in cases {
        std::fs::write(&ds, &pristine).unwrap();
        damage(&ds, at, len);
        let o = train_config(&tiny(), &out, &[]);
        assert!(!o.status.success(), "{what}: a damaged dataset was used");
        let log = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            log.contains("dataset.h5") && log.contains(named),
            "{what}: {log}"
        );
    }
}
