//! pg_ta: technical-analysis indicators with TA-Lib semantics and screener rule helpers,
//! computed inside PostgreSQL (schema `ta`).
//!
//! Layout: `indicators`, `rules`, `screener`, `ticks` and `features` are plain Rust (no pgrx;
//! tested with `cargo test`);
//! `pg` holds the thin SQL wrappers (aggregates, functions, composite types).

::pgrx::pg_module_magic!(name, version);

pub mod features;
pub mod indicators;
pub mod rules;
pub mod screener;
pub mod ticks;

mod pg;

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
