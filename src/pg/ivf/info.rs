//! inf_index_info(index): what an inf_ivf index's meta page says.

use super::pages;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Lists, dimension, rows its lists were trained on, and size in pages.
#[pg_extern(stable, parallel_safe)]
fn inf_index_info(
    index: pgrx::PgRelation,
) -> TableIterator<
    'static,
    (
        name!(lists, i32),
        name!(dimension, i32),
        name!(trained_rows, i64),
        name!(pages, i64),
    ),
> {
    let (index, index_name) = (index.oid(), index.name().to_string());
    let is_ivf = crate::pg::spi_read::one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_am am ON am.oid = c.relam
                        WHERE c.oid = $1 AND am.amname = 'inf_ivf')",
        &[index.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !is_ivf {
        crate::pg::errors::raise_with(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("relation \"{index_name}\" is not an inf_ivf index"),
            "pass an index made with USING inf_ivf, e.g. inf_index_info('my_index'::regclass)",
        );
    }
    unsafe {
        let rel = pg_sys::index_open(index, pg_sys::AccessShareLock as i32);
        let meta = pages::read_meta(rel);
        let blocks = pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM);
        pg_sys::index_close(rel, pg_sys::AccessShareLock as i32);
        TableIterator::once((
            meta.lists as i32,
            meta.dim as i32,
            meta.trained_rows as i64,
            blocks as i64,
        ))
    }
}
