//! `#[pg_test]`s for the SQL glue: NULL in each argument, error paths (SQLSTATE 22023),
//! OVER (PARTITION BY .. ORDER BY ..) behaviour, numeric vs double precision, composites,
//! step functions. The math itself is tested in `crate::indicators` with plain `cargo test`.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    const DATA: &str = "(SELECT s, i, (100 + ((i * 37) % 23) * 0.25 - (i % 7) * 0.5) * k AS x,
                               (101 + ((i * 37) % 23) * 0.25) * k AS h, (99 - (i % 7) * 0.5) * k AS l,
                               (10 + i % 5)::numeric AS v
                        FROM (VALUES ('a', 1), ('b', 2)) p(s, k), generate_series(1, 60) i) d";

    fn one_f64(q: &str) -> Option<f64> {
        Spi::get_one::<f64>(q).expect("query")
    }

    fn one_i64(q: &str) -> i64 {
        Spi::get_one::<i64>(q).expect("query").expect("not null")
    }

    #[pg_test]
    fn ema_window_numeric_equals_float8() {
        let mismatches = one_i64(&format!(
            "SELECT count(*) FILTER (WHERE a IS DISTINCT FROM b) FROM (
               SELECT ta.ema(x, 5) OVER w AS a, ta.ema(x::float8, 5) OVER w AS b
               FROM {DATA} WINDOW w AS (PARTITION BY s ORDER BY i)) q"
        ));
        assert_eq!(mismatches, 0);
    }

    #[pg_test]
    fn partitions_are_independent() {
        // b = 2 x a: every ema of b is twice the ema of a (exact for EMA's linear arithmetic
        // up to rounding), and the lookback restarts per partition
        let nulls = one_i64(&format!(
            "SELECT count(*) FILTER (WHERE e IS NULL) FROM (
               SELECT ta.ema(x, 5) OVER (PARTITION BY s ORDER BY i) AS e FROM {DATA}) q"
        ));
        assert_eq!(nulls, 8); // 4 per partition
        let max_rel = one_f64(&format!(
            "SELECT max(abs(eb - 2 * ea) / abs(eb)) FROM (
               SELECT i, ta.ema(x::float8, 5) OVER (PARTITION BY s ORDER BY i) AS ea FROM {DATA} WHERE s = 'a') a
             JOIN (SELECT i, ta.ema(x::float8, 5) OVER (PARTITION BY s ORDER BY i) AS eb FROM {DATA} WHERE s = 'b') b USING (i)"
        ))
        .unwrap();
        assert!(max_rel < 1e-15, "{max_rel}");
    }

    #[pg_test]
    fn plain_aggregate_returns_last_value() {
        let last_window = one_f64(&format!(
            "SELECT e FROM (SELECT i, ta.rsi(x, 14) OVER (ORDER BY i) AS e FROM {DATA} WHERE s = 'a') q ORDER BY i DESC LIMIT 1"
        ));
        let plain = one_f64(&format!(
            "SELECT ta.rsi(x, 14 ORDER BY i) FROM {DATA} WHERE s = 'a'"
        ));
        assert_eq!(last_window, plain);
        assert!(plain.is_some());
        // no rows: NULL
        assert_eq!(
            one_f64("SELECT ta.rsi(x, 14) FROM (SELECT 1.0::float8 AS x WHERE false) q"),
            None
        );
    }

    #[pg_test]
    fn null_value_rows_are_skipped() {
        // EMA(2) of 1, NULL, 3, 5: seed (1+3)/2 = 2 on row 3, then (5-2)*2/3+2 = 4; row 2 shows NULL (lookback)
        let got = Spi::get_one::<Vec<Option<f64>>>(
            "SELECT array_agg(e ORDER BY i) FROM (SELECT i, ta.ema(x, 2) OVER (ORDER BY i) AS e
               FROM (VALUES (1, 1.0::float8), (2, NULL), (3, 3.0), (4, 5.0)) v(i, x)) q",
        )
        .unwrap()
        .unwrap();
        assert_eq!(got, vec![None, None, Some(2.0), Some(4.0)]);
        // a NULL inside the series after the lookback repeats the current value
        let got = Spi::get_one::<Vec<Option<f64>>>(
            "SELECT array_agg(e ORDER BY i) FROM (SELECT i, ta.sma(x, 2) OVER (ORDER BY i) AS e
               FROM (VALUES (1, 1.0::float8), (2, 3.0), (3, NULL), (4, 5.0)) v(i, x)) q",
        )
        .unwrap()
        .unwrap();
        assert_eq!(got, vec![None, Some(2.0), Some(2.0), Some(4.0)]);
    }

    #[pg_test]
    fn null_in_hlc_inputs_skips_the_row() {
        let n = one_i64(
            "SELECT count(a) FROM (SELECT ta.atr(h, l, c, 2) OVER (ORDER BY i) AS a
               FROM (VALUES (1, 2.0::float8, 1.0::float8, 1.5::float8), (2, NULL, 1.0, 1.5),
                            (3, 2.0, NULL, 1.5), (4, 2.0, 1.0, NULL), (5, 2.5, 1.0, 2.0), (6, 3.0, 2.0, 2.5)) v(i, h, l, c)) q",
        );
        assert_eq!(n, 1); // rows 1, 5, 6 count: lookback 2 -> a value on row 6 only
    }

    #[pg_test(error = "ta.ema: time_period must be between 2 and 100000, got 1")]
    fn ema_period_too_small() {
        Spi::run("SELECT ta.ema(x, 1) OVER (ORDER BY x) FROM (VALUES (1.0::float8)) v(x)").unwrap();
    }

    #[pg_test(error = "ta.ema: time_period must be between 2 and 100000, got 100001")]
    fn ema_period_too_large() {
        Spi::run("SELECT ta.ema(x, 100001) FROM (VALUES (1.0::numeric)) v(x)").unwrap();
    }

    #[pg_test(error = "ta.rsi: time_period must not be NULL")]
    fn rsi_null_period() {
        Spi::run("SELECT ta.rsi(x, NULL) FROM (VALUES (1.0::float8)) v(x)").unwrap();
    }

    #[pg_test(error = "ta.sma: value must be a finite number, got NaN")]
    fn sma_nan_input() {
        Spi::run("SELECT ta.sma(x, 2) FROM (VALUES ('NaN'::float8)) v(x)").unwrap();
    }

    #[pg_test(error = "ta.sma: value must be a finite number, got NaN")]
    fn sma_numeric_nan_input() {
        Spi::run("SELECT ta.sma(x, 2) FROM (VALUES ('NaN'::numeric)) v(x)").unwrap();
    }

    #[pg_test(error = "ta.atr: high must be a finite number, got inf")]
    fn atr_infinite_input() {
        Spi::run("SELECT ta.atr(h, 1.0::float8, 1.0::float8, 14) FROM (VALUES ('Infinity'::float8)) v(h)").unwrap();
    }

    #[pg_test(error = "ta.ema: time_period must be constant within a series, got 3 after 2")]
    fn parameter_change_within_a_group() {
        Spi::run("SELECT ta.ema(x, p) OVER (ORDER BY i) FROM (VALUES (1, 1.0::float8, 2), (2, 2.0, 3)) v(i, x, p)").unwrap();
    }

    #[pg_test(
        error = "ta.macd: fast_period must be less than slow_period, got 26 >= slow_period 12"
    )]
    fn macd_fast_not_below_slow() {
        Spi::run("SELECT ta.macd(x, 26, 12, 9) FROM (VALUES (1.0::float8)) v(x)").unwrap();
    }

    #[pg_test(error = "ta.bbands: nb_dev_dn must be a finite number >= 0, got -2")]
    fn bbands_negative_deviation() {
        Spi::run("SELECT ta.bbands(x, 20, 2, -2) FROM (VALUES (1.0::float8)) v(x)").unwrap();
    }

    #[pg_test(error = "ta.stoch: slowd_period must be between 1 and 100000, got 0")]
    fn stoch_bad_period() {
        Spi::run("SELECT ta.stoch(x, x, x, 5, 3, 0) FROM (VALUES (1.0::float8)) v(x)").unwrap();
    }

    #[pg_test(error = "ta.volatility: close must be > 0 (log returns), got 0")]
    fn volatility_zero_close() {
        Spi::run("SELECT ta.volatility(x, 2) FROM (VALUES (0.0::float8)) v(x)").unwrap();
    }

    #[pg_test]
    fn error_sqlstate_is_invalid_parameter_value() {
        Spi::run(
            "CREATE FUNCTION pg_temp.probe(q text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN EXECUTE q; RETURN 'no error';
             EXCEPTION WHEN invalid_parameter_value THEN RETURN 'caught 22023'; END $$",
        )
        .unwrap();
        for q in [
            "SELECT ta.ema(1.0::float8, 0)",
            "SELECT ta.rsi(''NaN''::float8, 14)",
            "SELECT ta.macd(1.0::float8, 26, 12, 9)",
            "SELECT ta.rsi_step(ARRAY[1.0]::float8[], 1.0, 14)",
            "SELECT ta.vwap(1.0, 1.0, 0)",
        ] {
            let got = Spi::get_one::<String>(&format!("SELECT pg_temp.probe('{q}')"))
                .unwrap()
                .unwrap();
            assert_eq!(got, "caught 22023", "{q}");
        }
    }

    #[pg_test]
    fn composites_have_talib_field_names() {
        let n = one_i64(&format!(
            "SELECT count(*) FROM (SELECT (m).macd, (m).macd_signal, (m).macd_hist, (b).upper_band, (b).middle_band,
                                          (b).lower_band, (k).slow_k, (k).slow_d
               FROM (SELECT ta.macd(x, 3, 6, 4) OVER w AS m, ta.bbands(x, 5, 2, 2) OVER w AS b,
                            ta.stoch(h, l, x, 5, 3, 3) OVER w AS k
                     FROM {DATA} WINDOW w AS (PARTITION BY s ORDER BY i)) q
               WHERE m IS NOT NULL AND b IS NOT NULL AND k IS NOT NULL) z"
        ));
        assert_eq!(n, 2 * (60 - 8));
        // lower <= middle <= upper on every row
        let bad = one_i64(&format!(
            "SELECT count(*) FROM (SELECT ta.bbands(x, 5, 2, 2) OVER (PARTITION BY s ORDER BY i) AS b FROM {DATA}) q
             WHERE NOT ((b).lower_band <= (b).middle_band AND (b).middle_band <= (b).upper_band)"
        ));
        assert_eq!(bad, 0);
    }

    #[pg_test]
    fn rsi_step_fold_equals_window_bit_for_bit() {
        let mismatches = one_i64(&format!(
            "WITH RECURSIVE d AS (SELECT i, x::float8 AS x FROM {DATA} WHERE s = 'a'),
                  f(i, st) AS (SELECT 1, ta.rsi_step(NULL, x, 14) FROM d WHERE i = 1
                               UNION ALL SELECT f.i + 1, ta.rsi_step(f.st, d.x, 14) FROM f JOIN d ON d.i = f.i + 1),
                  w AS (SELECT i, ta.rsi(x, 14) OVER (ORDER BY i) AS r FROM d)
             SELECT count(*) FILTER (WHERE f.st[1] IS DISTINCT FROM w.r) FROM f JOIN w USING (i)"
        ));
        assert_eq!(mismatches, 0);
    }

    #[pg_test]
    fn macd_step_fold_equals_window_bit_for_bit() {
        let mismatches = one_i64(&format!(
            "WITH RECURSIVE d AS (SELECT i, x::float8 AS x FROM {DATA} WHERE s = 'b'),
                  f(i, st) AS (SELECT 1, ta.macd_step(NULL, x, 5, 13, 4) FROM d WHERE i = 1
                               UNION ALL SELECT f.i + 1, ta.macd_step(f.st, d.x, 5, 13, 4) FROM f JOIN d ON d.i = f.i + 1),
                  w AS (SELECT i, ta.macd(x, 5, 13, 4) OVER (ORDER BY i) AS m FROM d)
             SELECT count(*) FILTER (WHERE f.st[1] IS DISTINCT FROM (w.m).macd OR f.st[2] IS DISTINCT FROM (w.m).macd_signal
                                       OR f.st[3] IS DISTINCT FROM (w.m).macd_hist) FROM f JOIN w USING (i)"
        ));
        assert_eq!(mismatches, 0);
    }

    #[pg_test]
    fn step_functions_null_handling() {
        assert_eq!(
            Spi::get_one::<Vec<Option<f64>>>("SELECT ta.rsi_step(NULL, NULL, 14)").unwrap(),
            None
        );
        let st = Spi::get_one::<Vec<Option<f64>>>(
            "SELECT ta.rsi_step(ta.rsi_step(NULL, 1, 14), NULL, 14)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(st[0], None);
        assert_eq!(st[1], Some(7101.0));
    }

    #[pg_test(error = "ta.rsi_step: time_period must be constant within a series, got 10 after 14")]
    fn rsi_step_period_mismatch() {
        Spi::run("SELECT ta.rsi_step(ta.rsi_step(NULL, 1, 14), 2, 10)").unwrap();
    }

    #[pg_test]
    fn first_last_keep_the_type_and_value() {
        let first = Spi::get_one::<String>(
            "SELECT ta.first(p, t)::text || ' ' || pg_typeof(ta.first(p, t))::text FROM
               (VALUES (1.10000000000000000001::numeric, timestamptz '2024-01-02'), (2.5, '2024-01-01')) v(p, t)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(first, "2.5 numeric");
        let last = Spi::get_one::<String>(
            "SELECT ta.last(p, t) FROM (VALUES ('x'::text, 1::bigint), ('y', 3), ('z', 2)) v(p, t)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(last, "y");
        let exact = Spi::get_one::<String>(
            "SELECT ta.last(p, t)::text FROM
               (VALUES (1.10000000000000000001::numeric, timestamptz '2024-01-02'), (2.5, '2024-01-01')) v(p, t)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(exact, "1.10000000000000000001");
    }

    #[pg_test]
    fn ohlcv_rollup_is_exact() {
        let row = Spi::get_one::<String>(
            "SELECT ta.ohlcv(t, o, h, l, c, v)::text FROM (VALUES
               (timestamptz '2024-01-01 00:01', 2.0, 2.5, 1.5, 2.25, 0.1),
               (timestamptz '2024-01-01 00:00', 1.0, 3.5, 0.5, 1.25, 0.2),
               (timestamptz '2024-01-01 00:02', 3.0, 3.25, 2.5, 3.125, 0.3)) x(t, o, h, l, c, v)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(row, "(1.0,3.5,0.5,3.125,0.6)");
    }

    #[pg_test]
    fn frame_aggregates() {
        // VCP per candle: (105/102.5) * ((105-90) - (110-105)) / (110-90)
        let v = one_f64("SELECT ta.vcp(105.0, 102.5, 110.0, 90.0)").unwrap();
        assert!((v - 0.512_195_121_951_219_5).abs() < 1e-15);
        let p = Spi::get_one::<String>(
            "SELECT ta.fib_pivots(110.0::float8, 90.0::float8, 100.0::float8)::text",
        )
        .unwrap()
        .unwrap();
        assert_eq!(p, "(120,112.36,107.64,100,92.36,87.64,80)");
        assert_eq!(one_f64("SELECT ta.imbalance(0.0, 0.0)"), None);
        assert_eq!(one_f64("SELECT ta.imbalance(3.0, 1.0)"), Some(0.5));
        assert_eq!(
            one_f64("SELECT ta.vwap(p, v) FROM (VALUES (10.0, 1.0), (20.0, 3.0)) x(p, v)"),
            Some(17.5)
        );
    }

    #[pg_test]
    fn numeric_conversion_matches_postgres() {
        // the fast decimal path and PostgreSQL's own numeric -> float8 agree on awkward values
        let bad = one_i64(
            "SELECT count(*) FROM (VALUES (0.1), (1e-8), (123456789.12345678), (99999999999999999999.5),
                 (-0.000000012345), (1e-300), (5e300), (0), (-0), (54659.01000000), (0.30000000000000004))
               v(x) WHERE (SELECT ta.ema(y, 2 ORDER BY n) FROM (VALUES (1, x), (2, x)) z(n, y)) IS DISTINCT FROM x::float8",
        );
        assert_eq!(bad, 0);
    }

    #[pg_test]
    fn fixed_point_numeric_add_matches_postgres() {
        // crate::pg::common::numeric_add_fast / numeric_cmp_fast (the screener's volume sums)
        // against PostgreSQL's numeric_add, numeric_sub and numeric_cmp, byte for byte, on
        // 30,000 random pairs: every scale and sign, zero results (with their display scale),
        // long headers (display scale > 63), large integers, tiny fractions, and pairs too
        // long for the fixed-point path (NumBytes falls back to PostgreSQL's functions)
        use crate::pg::common::{numeric_add_fast, numeric_cmp_fast};
        use crate::pg::screener::NumBytes;
        use crate::screener::Volume;
        let q = "WITH r AS (
                   SELECT random() AS k, round((random() * 10 ^ (random() * 22))::numeric,
                                               (random() * 14)::int)
                            * CASE WHEN random() < 0.3 THEN -1 ELSE 1 END AS a,
                          round((random() * 10 ^ (random() * 22))::numeric, (random() * 14)::int)
                            * CASE WHEN random() < 0.3 THEN -1 ELSE 1 END AS b
                     FROM generate_series(1, 30000)),
                 p AS (
                   SELECT CASE WHEN k < 0.1 THEN round(a, 70) WHEN k < 0.2 THEN trunc(a) * 1e24
                               WHEN k < 0.3 THEN trunc(a) * 1e-30 ELSE a END AS x,
                          CASE WHEN k < 0.4 THEN b WHEN k < 0.5 THEN a WHEN k < 0.6 THEN -a
                               WHEN k < 0.65 THEN 0::numeric WHEN k < 0.7 THEN round(a, 3)
                               WHEN k < 0.75 THEN trunc(b) * 1e20 ELSE b END AS y
                     FROM r)
                 SELECT x, y, x + y, x - y, sign(x - y)::int FROM p";
        let payload = |n: &AnyNumeric| -> Vec<u8> {
            let d = n.clone().into_datum().expect("datum");
            unsafe {
                let v = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
                std::slice::from_raw_parts(
                    pgrx::varlena::vardata_any(v).cast::<u8>(),
                    pgrx::varlena::varsize_any_exhdr(v),
                )
                .to_vec()
            }
        };
        let (mut fast, mut total, mut bad) = (0, 0, Vec::<String>::new());
        Spi::connect(|client| {
            for row in client.select(q, None, &[]).expect("select") {
                let n = |i: usize| -> AnyNumeric { row.get(i).expect("get").expect("not null") };
                let (x, y, sum, diff) = (n(1), n(2), n(3), n(4));
                let order: i32 = row.get(5).expect("sign").expect("not null");
                let (px, py) = (payload(&x), payload(&y));
                let (ps, pd) = (payload(&sum), payload(&diff));
                total += 1;
                let got_sum = numeric_add_fast(&px, &py, false);
                let got_diff = numeric_add_fast(&px, &py, true);
                let got_cmp = numeric_cmp_fast(&px, &py);
                if let (Some((s, sl)), Some((d, dl)), Some(c)) = (got_sum, got_diff, got_cmp) {
                    fast += 1;
                    if s[..sl] != ps[..] || d[..dl] != pd[..] || c as i32 != order {
                        bad.push(format!("{x} ± {y}: {:?} {:?} {c:?}", &s[..sl], &d[..dl]));
                    }
                }
                // the Volume arithmetic (fast path or PostgreSQL's function) in every case
                let (vx, vy) = (NumBytes::from_payload(&px), NumBytes::from_payload(&py));
                if vx.add(&vy).payload() != &ps[..]
                    || vx.sub(&vy).payload() != &pd[..]
                    || vx.cmp(&vy) as i32 != order
                {
                    bad.push(format!("NumBytes {x} ± {y}"));
                }
            }
        });
        assert!(
            bad.is_empty(),
            "{} mismatches: {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
        // the fixed-point path serves most pairs (and so is what was checked above)
        assert!(
            fast * 10 > total * 7,
            "fixed point served {fast} of {total}"
        );
    }

    #[pg_test]
    fn wide_numeric_conversion_matches_postgres() {
        // crate::pg::common::numeric_to_f64 (the screener's volume sums: up to 36 significant
        // digits, parsed in Rust) against PostgreSQL's numeric::float8 on 20,000 random values
        // of every length and scale
        let q = "SELECT x, x::float8 FROM (
                   SELECT round((random() * 10 ^ (random() * 30))::numeric
                                * (10 ^ (random() * 20))::numeric, (random() * 20)::int)
                          * CASE WHEN random() < 0.1 THEN -1 ELSE 1 END AS x
                     FROM generate_series(1, 20000)
                   UNION ALL
                   -- halfway between two doubles (ties to even, both ways), a hair off them,
                   -- 2^53 + 1, long fractions, large integers
                   SELECT x FROM unnest(ARRAY[4503599627370496.5, 4503599627370497.5,
                            4503599627370496.50000000001, 4503599627370496.49999999999,
                            9007199254740993, 9007199254740995, 90071992547409930000,
                            0.1000000000000000055511151231257827,
                            123456789012345678901234.56789012, 1e-20, 98765432109876543210e-18,
                            -4503599627370497.5, 179769313486231570000000000000000000]) x
                 ) v";
        let mismatches: Vec<String> = Spi::connect(|client| {
            let mut out = Vec::new();
            for row in client.select(q, None, &[]).expect("select") {
                let n: AnyNumeric = row.get(1).expect("x").expect("not null");
                let want: f64 = row.get(2).expect("x::float8").expect("not null");
                let datum = n.clone().into_datum().expect("datum");
                let got = unsafe {
                    let v = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
                    let len = pgrx::varlena::varsize_any_exhdr(v);
                    crate::pg::common::numeric_to_f64(std::slice::from_raw_parts(
                        pgrx::varlena::vardata_any(v).cast::<u8>(),
                        len,
                    ))
                };
                if got.is_some_and(|g| g.to_bits() != want.to_bits()) {
                    out.push(format!("{n}: {got:?} vs {want}"));
                }
            }
            out
        });
        assert!(mismatches.is_empty(), "{mismatches:?}");
    }
}
