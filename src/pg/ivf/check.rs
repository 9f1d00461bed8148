//! inf_index_check(index): does an inf_ivf index agree with its table? Every
//! row the index should hold (visible in this snapshot, passing the index's
//! WHERE, with a vector) must be reachable from exactly one entry, and every
//! entry whose row is visible must carry that row's code. Run it in a
//! REPEATABLE READ transaction for an exact answer while others write.

use super::heap_rows::HeapRows;
use super::pages;
use super::scan::Pages;
use super::{shape, vector};
use crate::engine::ivf::codes;
use crate::engine::ivf::scan::ListReader;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::HashMap;

fn parse_ctid(text: &str) -> Option<i64> {
    let (block, offset) = text.trim_matches(|c| c == '(' || c == ')').split_once(',')?;
    let block: u32 = block.parse().ok()?;
    let offset: u16 = offset.parse().ok()?;
    Some(((block as i64) << 16) | offset as i64)
}

/// Check an inf_ivf index against its table.
#[allow(clippy::type_complexity)] // pgrx needs the literal row type
#[pg_extern(volatile, parallel_unsafe)]
fn inf_index_check(
    index: pgrx::PgRelation,
) -> TableIterator<
    'static,
    (
        name!(lists, i32),
        name!(entries, i64),
        name!(dead_entries, i64),
        name!(rows_expected, i64),
        name!(rows_reachable, i64),
        name!(rows_missing, i64),
        name!(wrong_entries, i64),
        name!(duplicate_entries, i64),
        name!(ok, bool),
    ),
> {
    let (index, index_name) = (index.oid(), index.name().to_string());
    let query = crate::pg::spi_read::one::<String>(
        "SELECT format('SELECT ctid::text FROM ONLY %s WHERE %I IS NOT NULL AND (%s)',
                       i.indrelid::regclass, a.attname, coalesce(pg_get_expr(i.indpred, i.indrelid), 'true'))
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indexrelid = $1 AND am.amname = 'inf_ivf'",
        &[index.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        crate::pg::errors::raise_with(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("relation \"{index_name}\" is not an inf_ivf index"),
            "pass an index made with USING inf_ivf, e.g. inf_index_check('my_index'::regclass)",
        )
    });
    let expected: Vec<i64> = Spi::connect(|client| {
        client
            .select(&query, None, &[])?
            .map(|r| Ok(r.get::<String>(1)?.as_deref().and_then(parse_ctid).unwrap_or(-1)))
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot read the indexed rows: {e}"));

    let mut counts = (0i64, 0i64, 0i64); // entries, dead, wrong
    let mut reached: HashMap<i64, u32> = HashMap::new();
    let lists;
    unsafe {
        let index_rel = pg_sys::index_open(index, pg_sys::AccessShareLock as i32);
        let heap = pg_sys::relation_open((*(*index_rel).rd_index).indrelid, pg_sys::AccessShareLock as i32);
        let mut rows = HeapRows::begin(heap, super::build::check_indexed_column(index_rel));
        let (_, shape) = shape::load(index_rel);
        lists = shape.lists.len() as i32;
        let snapshot = pg_sys::GetActiveSnapshot();
        let mut code = vec![0u8; codes::code_len(shape.dim())];
        let mut pages = Pages {
            index: index_rel,
            shape: &shape,
        };
        for list in 0..shape.lists.len() as u32 {
            // Copied out first: no index page stays locked while rows are read.
            let mut entries: Vec<(i64, Vec<u8>)> = Vec::new();
            pages.scan_list(list, &mut |key, stored| entries.push((key, stored.to_vec())));
            for (key, stored) in entries {
                counts.0 += 1;
                let seen = rows.with_vector(pages::unpack_tid(key), snapshot, |visible, v| {
                    let same = v.len() == shape.dim() && {
                        let unit = vector::unit(v, "a stored vector");
                        pages::encode_code(&unit, shape.centroid(list as usize), &shape.rotation, &mut code);
                        code == stored
                    };
                    (pages::pack_tid(visible), same)
                });
                match seen {
                    None => counts.1 += 1,
                    Some((visible, true)) => *reached.entry(visible).or_default() += 1,
                    Some((_, false)) => counts.2 += 1,
                }
            }
        }
        rows.end();
        pg_sys::relation_close(heap, pg_sys::AccessShareLock as i32);
        pg_sys::index_close(index_rel, pg_sys::AccessShareLock as i32);
    }
    let reachable = expected.iter().filter(|t| reached.contains_key(t)).count() as i64;
    let missing = expected.len() as i64 - reachable;
    let duplicates = reached.values().map(|n| (*n as i64) - 1).sum::<i64>();
    let ok = missing == 0 && counts.2 == 0 && duplicates == 0;
    TableIterator::once((
        lists,
        counts.0,
        counts.1,
        expected.len() as i64,
        reachable,
        missing,
        counts.2,
        duplicates,
        ok,
    ))
}
