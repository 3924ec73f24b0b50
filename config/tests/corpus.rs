//! Every file of the bad-configuration corpus (tests/corpus/config) is refused, with an error
//! naming the key its first line expects (`# expect: gateway.domain`), and nothing panics.

// figment's Jail wants its own large error type from every closure.
#![allow(clippy::result_large_err)]

use figment::Jail;

#[test]
fn every_bad_configuration_is_refused_naming_its_key() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/config");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("corpus").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus is there");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let expected = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("an expect line").trim().to_owned();
        // The environment is part of the configuration: a clean one for each file.
        Jail::expect_with(|_| {
            let error = switchboard_config::load_from_str(&text).err().ok_or(format!("{} was accepted", file.display()))?;
            if expected != "(any)" {
                assert_eq!(error.key(), Some(expected.as_str()), "{}: {error}", file.display());
            }
            assert!(!error.to_string().is_empty());
            Ok(())
        });
    }
}
