//! Embeds the data schema (`../sql/*.sql`, applied in file-name order by `ta-feed migrate`)
//! into the binary, so the binary works from any directory.
use std::{env, fs, path::PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let sql_dir = manifest_dir.join("..").join("sql");
    // A changed directory mtime catches added/removed files; per-file lines catch edits.
    println!("cargo:rerun-if-changed={}", sql_dir.display());
    let mut files: Vec<PathBuf> = fs::read_dir(&sql_dir)
        .unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e} (ta-feed embeds ../sql/*.sql)",
                sql_dir.display()
            )
        })
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "sql") && p.is_file())
        .collect();
    files.sort();
    let mut out =
        String::from("/// (file name, SQL text) of every `sql/*.sql`, in file-name order.\n");
    out.push_str("pub static MIGRATIONS: &[(&str, &str)] = &[\n");
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let abs = path.canonicalize().expect("canonicalize sql file");
        out.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            abs.display().to_string()
        ));
    }
    out.push_str("];\n");
    let dest = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("migrations.rs");
    fs::write(dest, out).expect("write migrations.rs");
}
