//! The MOSES pretraining configs (issue 8): they pretrain the JT-VAE of Table 1's
//! ZINC pipeline (same data file, split, seed, held-out set and vocabulary) on the
//! file `scripts/fetch_moses.sh` writes, the 250k one with `jtvae.train_limit`; and
//! where that file has not been fetched (CI, a fresh clone), `prepare` says how to
//! get it instead of failing on a bare path.
mod common;
use common::*;

fn table(path: &str) -> toml::Table {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    text.parse().unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn get<'a>(t: &'a toml::Table, section: &str, key: &str) -> Option<&'a toml::Value> {
    t.get(section)?.as_table()?.get(key)
}

#[test]
fn moses_configs_pretrain_table1_zincs_jtvae_on_the_fetched_file() {
    let zinc = table("inputs/table1/zinc.toml");
    for (path, limit) in [
        ("inputs/table1/zinc_moses.toml", None),
        ("inputs/table1/zinc_moses250k.toml", Some(250_000)),
    ] {
        let m = table(path);
        for (section, key) in [
            ("run", "seed"),
            ("data", "csv"),
            ("data", "target_column"),
            ("data", "n_train"),
            ("data", "n_test"),
            ("jtvae", "vocab_csv"),
            ("jtvae", "hidden"),
            ("jtvae", "latent"),
            ("jtvae", "max_candidates"),
        ] {
            assert_eq!(
                get(&m, section, key),
                get(&zinc, section, key),
                "{path}: {section}.{key} differs from zinc.toml's"
            );
        }
        assert_eq!(
            get(&m, "jtvae", "train_csv").and_then(|v| v.as_str()),
            Some("../data/moses/moses_zinc.csv.gz"),
            "{path}"
        );
        assert_eq!(
            get(&m, "jtvae", "train_limit").and_then(|v| v.as_integer()),
            limit,
            "{path}"
        );
        let stages = get(&m, "train", "stages").unwrap().as_array().unwrap();
        assert_eq!(stages.len(), 3, "{path}: jtvae, mpnn, zo");
    }
    // The fetch script writes the file the configs name.
    let script = std::fs::read_to_string(repo().join("scripts/fetch_moses.sh")).unwrap();
    assert!(script.contains("OUT=inputs/data/moses") && script.contains("moses_zinc.csv.gz"));
}

#[test]
fn an_unfetched_moses_file_is_an_error_that_says_how_to_fetch_it() {
    let dir = tempfile::tempdir().unwrap();
    let toml = std::fs::read_to_string(repo().join("inputs/table1/zinc_moses250k.toml")).unwrap();
    let data = repo().join("inputs/data");
    let toml = toml
        .replace(
            "\"../data/moses/",
            &format!("\"{}/", dir.path().join("moses").display()),
        )
        .replace("\"../data/", &format!("\"{}/", data.display()));
    let cfg = dir.path().join("moses.toml");
    std::fs::write(&cfg, toml).unwrap();
    let out = dir.path().join("out");
    let o = zo(&[
        "prepare",
        cfg.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = text(&o);
    assert!(
        e.contains("jtvae.train_csv")
            && e.contains("moses_zinc.csv.gz")
            && e.contains("scripts/fetch_moses.sh"),
        "{e}"
    );
    assert!(!out.join("dataset.h5").exists());
}
