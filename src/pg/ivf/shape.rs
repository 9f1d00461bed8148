//! The centroids and list locations of an index, cached per backend and
//! keyed by the meta page's build id: lists never move after a build, so
//! the cache is re-read only after a REINDEX (or an empty index's first list).

use super::pages::{self, Locked, Meta};
use crate::engine::ivf::centroids::Centroids;
use crate::engine::ivf::rotation::Rotation;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Debug, Clone, Copy)]
pub struct ListLocation {
    /// Where the list's directory item is.
    pub block: pg_sys::BlockNumber,
    pub offset: pg_sys::OffsetNumber,
    /// First data page (fixed at build).
    pub head: pg_sys::BlockNumber,
}

pub struct Shape {
    pub build_id: u64,
    pub centroids: Centroids,
    pub lists: Vec<ListLocation>,
    /// The rotation every code of the index was made with.
    pub rotation: Rotation,
}

impl Shape {
    /// Dimension of the indexed vectors (also of an index without lists).
    pub fn dim(&self) -> usize {
        self.centroids.dim()
    }

    pub fn centroid(&self, list: usize) -> &[f32] {
        self.centroids.get(list)
    }
}

thread_local! {
    static CACHE: RefCell<HashMap<pg_sys::Oid, Rc<Shape>>> = RefCell::new(HashMap::new());
}

pub unsafe fn load(index: pg_sys::Relation) -> (Meta, Rc<Shape>) {
    let meta = pages::read_meta(index);
    let oid = (*index).rd_id;
    if let Some(hit) = CACHE.with(|c| c.borrow().get(&oid).cloned()) {
        if hit.build_id == meta.build_id {
            return (meta, hit);
        }
    }
    let shape = Rc::new(read_directory(index, &meta));
    CACHE.with(|c| c.borrow_mut().insert(oid, shape.clone()));
    (meta, shape)
}

unsafe fn read_directory(index: pg_sys::Relation, meta: &Meta) -> Shape {
    let dim = meta.dim as usize;
    let mut centroids = Vec::with_capacity(meta.lists as usize * dim);
    let mut lists = Vec::with_capacity(meta.lists as usize);
    let mut block = if meta.lists == 0 {
        pages::INVALID_BLOCK
    } else {
        meta.first_directory
    };
    while block != pages::INVALID_BLOCK {
        let buffer = Locked::read(index, block, false);
        let page = buffer.page();
        for (offset, item) in pages::items(page) {
            let head = pages::list_head_of(item);
            lists.push(ListLocation {
                block,
                offset,
                head: head.head,
            });
            centroids.extend(pages::centroid_of(item, dim));
        }
        block = (*pages::opaque(page)).next;
    }
    if lists.len() != meta.lists as usize {
        pgrx::error!(
            "inf_ir: index \"{}\" lists {} lists in its directory, its meta page says {}; REINDEX it",
            pages::relation_name(index),
            lists.len(),
            meta.lists
        );
    }
    Shape {
        build_id: meta.build_id,
        centroids: Centroids::new(centroids, dim),
        lists,
        rotation: Rotation::new(dim, pages::ROTATION_SEED),
    }
}
