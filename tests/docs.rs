//! Every TOML snippet in the docs is parsed, so the docs cannot drift from the code. A snippet
//! starts with `# file: <path under recipes/>`; recipe snippets are written to a temp recipes
//! folder and every version there is loaded (merged and templated).

use packager::recipe::{Catalogue, LoadOptions};

fn snippets(doc: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(doc).unwrap();
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```toml" {
            continue;
        }
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let first = body.first().copied().unwrap_or("");
        let file = first.strip_prefix("# file: ").unwrap_or_else(|| {
            panic!("{doc}: a TOML snippet must start with `# file: PATH`, got {first:?}")
        });
        out.push((file.to_string(), body.join("\n")));
    }
    out
}

#[test]
fn recipe_reference_snippets_parse_and_load() {
    let all = snippets(concat!(env!("CARGO_MANIFEST_DIR"), "/recipes/README.md"));
    assert!(all.len() >= 4, "the reference has its examples");
    let dir = tempfile::tempdir().unwrap();
    for (file, body) in &all {
        let _: toml::Table = body.parse().unwrap_or_else(|e| panic!("{file}: {e}"));
        let p = dir.path().join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let cat = Catalogue::open(dir.path()).unwrap();
    let mut loaded = 0;
    for rt in cat.runtimes() {
        for (v, _) in &rt.versions {
            cat.load(rt.name.as_str(), v, &LoadOptions::default())
                .unwrap_or_else(|e| panic!("{} {v}: {e}", rt.name));
            loaded += 1;
        }
    }
    assert_eq!(loaded, 3, "mono 3.2.8, xsp 3.0.11 and zs 1.0.0");
    let zs = cat
        .load(
            "zs",
            &"1.0.0".parse().unwrap(),
            &LoadOptions {
                jobs: 1,
                arch: packager::arch::Arch::Amd64,
            },
        )
        .unwrap();
    assert_eq!(zs.artifact, "zs-1.0.0.tar.zst");
    assert_eq!(zs.zstd_level, 19);
    let xsp = cat
        .load("xsp", &"3.0.11".parse().unwrap(), &LoadOptions::default())
        .unwrap();
    assert_eq!(xsp.build.requires[0].runtime.as_str(), "mono");
    assert!(xsp.build.install.is_empty());
    assert_eq!(xsp.resources[1].dest, "external/tools");
}

#[test]
fn readme_snippets_parse() {
    for doc in ["README.md"] {
        let path = format!("{}/{doc}", env!("CARGO_MANIFEST_DIR"));
        let all = snippets(&path);
        assert!(all.iter().filter(|(f, _)| f.starts_with("stacks/")).count() >= 3);
        for (file, body) in all {
            let _: toml::Table = body.parse().unwrap_or_else(|e| panic!("{doc} {file}: {e}"));
            if file.starts_with("stacks/") {
                packager::stack::parse_manifest(&body, std::path::Path::new(&file))
                    .unwrap_or_else(|e| panic!("{doc} {file}: {e}"));
            }
        }
    }
}

#[test]
fn every_shipped_recipe_loads() {
    let cat = Catalogue::open(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/recipes"
    )))
    .unwrap();
    let mut n = 0;
    for rt in cat.runtimes() {
        for (v, _) in &rt.versions {
            let r = cat
                .load(rt.name.as_str(), v, &LoadOptions::default())
                .unwrap_or_else(|e| panic!("{} {v}: {e}", rt.name));
            assert!(r.source.url.starts_with("https://"), "{} {v}", rt.name);
            assert!(!r.test.commands.is_empty(), "{} {v} has tests", rt.name);
            n += 1;
        }
    }
    assert!(n > 0);
}
