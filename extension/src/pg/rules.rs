//! SQL wrapper for `crate::rules::expr`: `ta.rule_compile`.

use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode, PgTupleDesc};

use crate::rules::expr::{self, Column, ColumnType, RuleError};

fn column_type(oid: pg_sys::Oid) -> ColumnType {
    match oid {
        pg_sys::INT2OID
        | pg_sys::INT4OID
        | pg_sys::INT8OID
        | pg_sys::FLOAT4OID
        | pg_sys::FLOAT8OID
        | pg_sys::NUMERICOID => ColumnType::Number,
        pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID | pg_sys::NAMEOID => {
            ColumnType::Text
        }
        pg_sys::BOOLOID => ColumnType::Boolean,
        _ => ColumnType::Other,
    }
}

fn sqlstate(e: &RuleError) -> PgSqlErrorCode {
    match e {
        RuleError::Syntax { .. } | RuleError::Empty => PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
        RuleError::UnknownColumn { .. } => PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
        RuleError::UnknownFunction { .. } | RuleError::Arity { .. } => {
            PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION
        }
        RuleError::Type { .. }
        | RuleError::UnusableColumn { .. }
        | RuleError::NotBoolean { .. } => PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
        RuleError::MissingParameter { .. } | RuleError::BadParameter { .. } => {
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
        }
    }
}

/// Compile a screener rule expression to safe SQL (see `crate::rules::expr`).
#[pg_extern(stable, parallel_safe, name = "rule_compile")]
fn rule_compile(expression: &str, row_type: &str, config: Option<JsonB>) -> String {
    let Some(desc) = PgTupleDesc::for_composite_type(row_type) else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("ta.rule_compile: row_type \"{row_type}\" is not a composite type")
        );
    };
    let columns: Vec<Column> = desc
        .iter()
        .filter(|a| !a.is_dropped())
        .map(|a| Column {
            name: a.name().to_string(),
            ty: column_type(a.type_oid().value()),
        })
        .collect();
    let config = config.map(|j| j.0).unwrap_or(serde_json::Value::Null);
    if !(config.is_object() || config.is_null()) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("ta.rule_compile: config must be a JSON object, got {config}")
        );
    }
    match expr::compile(expression, &columns, &config) {
        Ok(c) => c.sql,
        Err(e) => {
            let code = sqlstate(&e);
            let msg = match &e {
                RuleError::UnknownColumn { .. } => {
                    format!("invalid rule expression: {e}; the columns of {row_type} can be used")
                }
                _ => format!("invalid rule expression: {e}"),
            };
            ereport!(ERROR, code, msg);
        }
    }
}

extension_sql!(
    r#"
COMMENT ON FUNCTION ta.rule_compile(text, text, jsonb) IS
'Validate a screener rule expression and compile it to SQL. expression: a boolean expression over '
'the columns of the composite type row_type (e.g. ''change_5m > 2 AND rsi_14 < $rsi_max''), using '
'numbers, ''strings'', AND/OR/NOT, comparisons, IS [NOT] NULL, [NOT] BETWEEN, [NOT] IN (...), + - * /, '
'and abs/greatest/least/coalesce/ln/sqrt/sign/round; $name reads the number config->name. Returns '
'parenthesised SQL in which columns read m."column" and parameters are literals; division by zero, '
'ln/sqrt outside their domain give NULL instead of an error. Errors: 42601 syntax, 42703 unknown '
'column, 42883 function not allowed, 42804 type mismatch, 22023 missing or non-numeric parameter.';
"#,
    name = "rule_compile_comment",
    requires = [rule_compile],
);
