//! VACUUM: entries of dead rows leave their pages (the space is reused by
//! later inserts into the same list: each list's insert block moves back to
//! its first page with room), and the cleanup pass reports the counts.

use super::device_copy;
use super::pages::{self, ListHead, Locked, WalChange};
use super::shape::{self, ListLocation};
use crate::worker::copy_protocol::CopyKey;
use pgrx::pg_sys;
use pgrx::prelude::*;

unsafe fn stats_or_new(stats: *mut pg_sys::IndexBulkDeleteResult) -> *mut pg_sys::IndexBulkDeleteResult {
    if stats.is_null() {
        PgBox::<pg_sys::IndexBulkDeleteResult>::alloc0().into_pg()
    } else {
        stats
    }
}

/// Walk one list; `dead` says which TIDs to remove (None: count only).
unsafe fn vacuum_list(
    index: pg_sys::Relation,
    location: ListLocation,
    dead: Option<(pg_sys::IndexBulkDeleteCallback, *mut std::ffi::c_void)>,
    stats: &mut pg_sys::IndexBulkDeleteResult,
    entry_len: usize,
    key: CopyKey,
) {
    let mut block = location.head;
    let mut first_with_room: Option<pg_sys::BlockNumber> = None;
    let mut chain = Vec::new();
    while block != pages::INVALID_BLOCK {
        pg_sys::vacuum_delay_point();
        chain.push(block);
        let buffer = Locked::read(index, block, dead.is_some());
        let page = buffer.page();
        let mut remove: Vec<pg_sys::OffsetNumber> = Vec::new();
        let mut removed_tids = Vec::new();
        for (offset, entry) in pages::items(page) {
            let mut tid = pages::entry_tid(entry);
            match dead {
                Some((Some(callback), state)) if callback(&mut tid, state) => {
                    remove.push(offset);
                    removed_tids.push(tid);
                }
                _ => stats.num_index_tuples += 1.0,
            }
        }
        if !remove.is_empty() {
            device_copy::send_removals(key, &removed_tids);
            let mut wal = WalChange::start(index);
            let image = wal.page(&buffer, false);
            pg_sys::PageIndexMultiDelete(image, remove.as_mut_ptr(), remove.len() as i32);
            wal.finish();
            stats.tuples_removed += remove.len() as f64;
        }
        if first_with_room.is_none() && pages::has_room(page, entry_len) {
            first_with_room = Some(block);
        }
        block = (*pages::opaque(page)).next;
    }
    let Some(room) = first_with_room else { return };
    if dead.is_none() {
        return;
    }
    let directory = Locked::read(index, location.block, true);
    let item = pages::items(directory.page())
        .find(|(off, _)| *off == location.offset)
        .map(|(_, i)| pages::list_head_of(i));
    if let Some(head) = item {
        let position = |b| chain.iter().position(|c| *c == b);
        // Only move the insert block back: past it pages may have been
        // added since the walk began.
        if matches!((position(room), position(head.insert)), (Some(r), Some(i)) if r < i) {
            let mut wal = WalChange::start(index);
            pages::set_list_head(
                wal.page(&directory, false),
                location.offset,
                ListHead {
                    head: head.head,
                    insert: room,
                },
            );
            wal.finish();
        }
    }
}

unsafe fn walk(
    index: pg_sys::Relation,
    dead: Option<(pg_sys::IndexBulkDeleteCallback, *mut std::ffi::c_void)>,
    stats: *mut pg_sys::IndexBulkDeleteResult,
) -> *mut pg_sys::IndexBulkDeleteResult {
    let stats = stats_or_new(stats);
    let (meta, shape) = shape::load(index);
    let entry_len = pages::entry_len(meta.dim.max(1) as usize);
    (*stats).num_index_tuples = 0.0;
    let key = device_copy::key(index, meta.build_id);
    for location in &shape.lists {
        vacuum_list(index, *location, dead, &mut *stats, entry_len, key);
    }
    (*stats).num_pages = pg_sys::RelationGetNumberOfBlocksInFork(index, pg_sys::ForkNumber::MAIN_FORKNUM);
    stats
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambulkdelete(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
    callback: pg_sys::IndexBulkDeleteCallback,
    callback_state: *mut std::ffi::c_void,
) -> *mut pg_sys::IndexBulkDeleteResult {
    walk((*info).index, Some((callback, callback_state)), stats)
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amvacuumcleanup(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
) -> *mut pg_sys::IndexBulkDeleteResult {
    if (*info).analyze_only {
        return stats;
    }
    if stats.is_null() {
        // No bulk delete ran (nothing to remove): count for the statistics.
        return walk((*info).index, None, stats);
    }
    stats
}
