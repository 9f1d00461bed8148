//! aminsert: one entry per new row version, in the list of the nearest
//! centroid. Only that list's last page is locked, and only for the moment
//! of the change: writers of one corpus never wait for each other's commit.

use super::pages::{self, ListHead, Locked, WalChange};
use super::{build, device_copy, shape, vector};
use pgrx::pg_sys;
use pgrx::prelude::*;

// The signature is PostgreSQL's.
#[allow(clippy::too_many_arguments)]
#[pg_guard]
pub unsafe extern "C-unwind" fn aminsert(
    index: pg_sys::Relation,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    heap_tid: pg_sys::ItemPointer,
    _heap: pg_sys::Relation,
    _check_unique: pg_sys::IndexUniqueCheck::Type,
    _unchanged: bool,
    _info: *mut pg_sys::IndexInfo,
) -> bool {
    if *isnull {
        return false;
    }
    let what = format!("the vector of row {}", build::tid_text(&*heap_tid));
    let unit = vector::with_floats(*values, &what, |v| vector::unit(v, &what));
    let (mut meta, mut shape) = shape::load(index);
    if meta.dim == 0 {
        first_list(index, &unit);
        (meta, shape) = shape::load(index);
    }
    if unit.len() != meta.dim as usize {
        vector::raise_dimension_mismatch(
            &what,
            unit.len(),
            &pages::relation_name(index),
            meta.dim as usize,
            "embed it with the corpus's model (inf_embed_corpus does), or index each model's vectors separately",
        );
    }
    let list = shape.centroids.nearest(&unit);
    let mut entry = Vec::new();
    pages::make_entry(&*heap_tid, &unit, shape.centroid(list), &shape.rotation, &mut entry);
    let location = shape.lists[list];
    append(index, location, &entry);
    // After the entry is on its page: a copy loading now either reads the
    // entry there or gets it from here.
    device_copy::send_insert(device_copy::key(index, meta.build_id), &*heap_tid, &unit);
    false
}

/// Append an entry to a list: the first page from its insert block on with
/// room, or a new last page.
pub unsafe fn append(index: pg_sys::Relation, location: shape::ListLocation, entry: &[u8]) {
    let directory = Locked::read(index, location.block, false);
    let head = pages::list_head_of(
        pages::items(directory.page())
            .find(|(off, _)| *off == location.offset)
            .map(|(_, item)| item)
            .unwrap_or_else(|| {
                pgrx::error!(
                    "inf_ir: index \"{}\" lost a list item; REINDEX it",
                    pages::relation_name(index)
                )
            }),
    );
    drop(directory);
    let mut block = head.insert;
    loop {
        let buffer = Locked::read(index, block, true);
        if pages::has_room(buffer.page(), entry.len()) {
            let mut wal = WalChange::start(index);
            let page = wal.page(&buffer, false);
            if !pages::add_item(page, entry) {
                pgrx::error!(
                    "inf_ir: could not add an entry to index \"{}\"",
                    pages::relation_name(index)
                );
            }
            wal.finish();
            return;
        }
        let next = (*pages::opaque(buffer.page())).next;
        if next != pages::INVALID_BLOCK {
            drop(buffer);
            block = next;
            continue;
        }
        // The list's last page is full: link a new one and point the list at it.
        let fresh = Locked::extend(index, pg_sys::ForkNumber::MAIN_FORKNUM);
        let directory = Locked::read(index, location.block, true);
        let mut wal = WalChange::start(index);
        let new_page = wal.page(&fresh, true);
        pages::init_page(new_page, pages::KIND_DATA);
        if !pages::add_item(new_page, entry) {
            pgrx::error!("inf_ir: an index entry does not fit on an empty page");
        }
        (*pages::opaque(wal.page(&buffer, false))).next = fresh.block();
        pages::set_list_head(
            wal.page(&directory, false),
            location.offset,
            ListHead {
                head: head.head,
                insert: fresh.block(),
            },
        );
        wal.finish();
        return;
    }
}

/// An index built on no rows gets its first list from its first vector.
unsafe fn first_list(index: pg_sys::Relation, unit: &[f32]) {
    let meta_buffer = Locked::read(index, pages::META_BLOCK, true);
    let meta = *pages::meta(meta_buffer.page());
    if meta.dim != 0 {
        return; // another backend did it while we waited for the lock
    }
    let dim = unit.len();
    if dim > pages::max_dimension() {
        pgrx::error!(
            "inf_ir: inf_ivf indexes at most {} dimensions, not {dim}",
            pages::max_dimension()
        );
    }
    let data = Locked::extend(index, pg_sys::ForkNumber::MAIN_FORKNUM);
    let directory = Locked::extend(index, pg_sys::ForkNumber::MAIN_FORKNUM);
    let mut wal = WalChange::start(index);
    pages::init_page(wal.page(&data, true), pages::KIND_DATA);
    let dir_page = wal.page(&directory, true);
    pages::init_page(dir_page, pages::KIND_DIRECTORY);
    let head = ListHead {
        head: data.block(),
        insert: data.block(),
    };
    pages::add_item(dir_page, &pages::list_item(head, unit));
    let meta_page = wal.page(&meta_buffer, false);
    pages::write_meta(
        meta_page,
        pages::Meta {
            dim: dim as u32,
            lists: 1,
            first_directory: directory.block(),
            build_id: build::new_build_id(),
            ..meta
        },
    );
    wal.finish();
}
