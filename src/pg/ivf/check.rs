//! inf_index_check(index): does an inf_ivf index agree with its table? Every
//! row the index should hold (visible in this snapshot, passing the index's
//! WHERE, with a vector) must be reachable from exactly one entry, and every
//! entry whose row is visible must carry that row's code. Run it in a
//! REPEATABLE READ transaction for an exact answer while others write.

use super::pages::{self, Locked};
use super::{shape, vector};
use crate::engine::ivf::codes;
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
        let attnum = super::build::check_indexed_column(index_rel);
        let (_, shape) = shape::load(index_rel);
        lists = shape.lists.len() as i32;
        let fetch = (*(*heap).rd_tableam).index_fetch_begin.expect("table AM fetches rows")(heap);
        let slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
        let snapshot = pg_sys::GetActiveSnapshot();
        let fetch_tuple = (*(*heap).rd_tableam).index_fetch_tuple.expect("table AM fetches rows");
        let mut code = vec![0u8; codes::code_len(shape.dim)];
        for location in &shape.lists {
            let mut block = location.head;
            while block != pages::INVALID_BLOCK {
                let buffer = Locked::read(index_rel, block, false);
                let page = buffer.page();
                let entries: Vec<Vec<u8>> = pages::items(page).map(|(_, e)| e.to_vec()).collect();
                block = (*pages::opaque(page)).next;
                drop(buffer);
                for entry in entries {
                    counts.0 += 1;
                    let mut tid = pages::entry_tid(&entry);
                    let (mut again, mut all_dead) = (false, false);
                    if !fetch_tuple(fetch, &mut tid, snapshot, slot, &mut again, &mut all_dead) {
                        counts.1 += 1;
                        continue;
                    }
                    pg_sys::slot_getsomeattrs_int(slot, attnum);
                    let i = (attnum - 1) as usize;
                    let matches = !*(*slot).tts_isnull.add(i)
                        && vector::with_floats(*(*slot).tts_values.add(i), "a stored vector", |v| {
                            v.len() == shape.dim && {
                                codes::encode(&vector::unit(v, "a stored vector"), &mut code);
                                code == pages::entry_code(&entry)
                            }
                        });
                    if matches {
                        *reached.entry(pages::pack_tid(&(*slot).tts_tid)).or_default() += 1;
                    } else {
                        counts.2 += 1;
                    }
                    pg_sys::ExecClearTuple(slot);
                }
                pgrx::check_for_interrupts!();
            }
        }
        (*(*heap).rd_tableam).index_fetch_end.expect("table AM fetches rows")(fetch);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
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
