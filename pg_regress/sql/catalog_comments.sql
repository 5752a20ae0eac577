-- Every object of schemas ta and market carries a COMMENT ON (shown by \df+, \dd, \d+ and
-- pgAdmin): functions, aggregates, tables, views and composite types.  Each query lists the
-- objects that lack one, so the expected output is empty.
SELECT p.oid::regprocedure AS function_without_comment
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('ta', 'market') AND obj_description(p.oid, 'pg_proc') IS NULL
 ORDER BY 1::text;
SELECT c.oid::regclass AS relation_without_comment
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('ta', 'market') AND c.relkind IN ('r', 'v', 'm', 'p')
   AND obj_description(c.oid, 'pg_class') IS NULL
 ORDER BY 1::text;
SELECT t.oid::regtype AS type_without_comment
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  JOIN pg_class c ON c.oid = t.typrelid AND c.relkind = 'c'
 WHERE n.nspname IN ('ta', 'market')
   AND obj_description(t.oid, 'pg_type') IS NULL AND obj_description(c.oid, 'pg_class') IS NULL
 ORDER BY 1::text;
-- and there is something to check
SELECT count(*) > 100 AS has_functions
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('ta', 'market');
