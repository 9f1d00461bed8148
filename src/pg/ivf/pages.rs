//! Page layout of an inf_ivf index, and the buffer and WAL helpers every
//! callback shares. All changes go through generic WAL records, so crash
//! recovery and physical standbys replay them without a custom resource manager.
//!
//! Block 0 is the meta page. Blocks 1.. start the directory: a chain of
//! pages whose items are lists (head block, insert block, centroid). Each
//! list is a chain of data pages whose items are entries (heap TID, code).
//! Every page's special space holds the next block of its chain.

use crate::engine::ivf::rotation::Rotation;
use pgrx::pg_sys;
use std::mem::size_of;

pub const MAGIC: u32 = 0x1F1F_0001;
/// 2: 4-bit codes of rotated residuals (1 held int8 codes of the rows).
pub const LAYOUT_VERSION: u32 = 2;
/// Seed of the codes' rotation (fixed: a rotation needs no variety, only agreement).
pub const ROTATION_SEED: u64 = 0x1F1F;
pub const META_BLOCK: pg_sys::BlockNumber = 0;
pub const INVALID_BLOCK: pg_sys::BlockNumber = pg_sys::InvalidBlockNumber;

pub const KIND_META: u16 = 1;
pub const KIND_DIRECTORY: u16 = 2;
pub const KIND_DATA: u16 = 3;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub magic: u32,
    pub version: u32,
    /// 0 until the first vector fixes it (an index built on no rows).
    pub dim: u32,
    pub lists: u32,
    pub first_directory: pg_sys::BlockNumber,
    pub _pad: u32,
    /// Changes at every build (and when an empty index gets its first list),
    /// so backends know when their cached centroids are stale.
    pub build_id: u64,
    /// Rows the lists were trained on.
    pub trained_rows: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Opaque {
    pub next: pg_sys::BlockNumber,
    pub kind: u16,
    pub _pad: u16,
}

/// A directory item's fixed part; `dim` f32 centroid values follow.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ListHead {
    pub head: pg_sys::BlockNumber,
    pub insert: pg_sys::BlockNumber,
}

pub fn list_item_len(dim: usize) -> usize {
    size_of::<ListHead>() + 4 * dim
}

/// An entry: the heap TID (6 bytes), 2 bytes of padding, then the code.
pub const ENTRY_TID_LEN: usize = 8;

pub fn entry_len(dim: usize) -> usize {
    ENTRY_TID_LEN + crate::engine::ivf::codes::code_len(dim)
}

/// The largest dimension whose directory item fits on a page.
pub fn max_dimension() -> usize {
    (pg_sys::BLCKSZ as usize - 24 - size_of::<Opaque>() - 64) / 4 - 2
}

pub fn pack_tid(tid: &pg_sys::ItemPointerData) -> i64 {
    let block = ((tid.ip_blkid.bi_hi as u32) << 16) | tid.ip_blkid.bi_lo as u32;
    ((block as i64) << 16) | tid.ip_posid as i64
}

pub fn unpack_tid(key: i64) -> pg_sys::ItemPointerData {
    let block = (key >> 16) as u32;
    pg_sys::ItemPointerData {
        ip_blkid: pg_sys::BlockIdData {
            bi_hi: (block >> 16) as u16,
            bi_lo: (block & 0xFFFF) as u16,
        },
        ip_posid: (key & 0xFFFF) as u16,
    }
}

/// A pinned, locked buffer; unlocked and released on drop (also on ERROR,
/// where PostgreSQL's resource owner would release it anyway).
pub struct Locked {
    pub buffer: pg_sys::Buffer,
}

impl Locked {
    pub unsafe fn read(index: pg_sys::Relation, block: pg_sys::BlockNumber, exclusive: bool) -> Self {
        let buffer = pg_sys::ReadBufferExtended(
            index,
            pg_sys::ForkNumber::MAIN_FORKNUM,
            block,
            pg_sys::ReadBufferMode::RBM_NORMAL,
            std::ptr::null_mut(),
        );
        pg_sys::LockBuffer(
            buffer,
            if exclusive {
                pg_sys::BUFFER_LOCK_EXCLUSIVE
            } else {
                pg_sys::BUFFER_LOCK_SHARE
            } as i32,
        );
        Locked { buffer }
    }

    /// A new block at the end of `index`, exclusively locked.
    pub unsafe fn extend(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type) -> Self {
        pg_sys::LockRelationForExtension(index, pg_sys::ExclusiveLock as i32);
        let buffer = pg_sys::ReadBufferExtended(
            index,
            fork,
            pg_sys::InvalidBlockNumber, // P_NEW
            pg_sys::ReadBufferMode::RBM_NORMAL,
            std::ptr::null_mut(),
        );
        pg_sys::LockBuffer(buffer, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
        pg_sys::UnlockRelationForExtension(index, pg_sys::ExclusiveLock as i32);
        Locked { buffer }
    }

    pub fn block(&self) -> pg_sys::BlockNumber {
        unsafe { pg_sys::BufferGetBlockNumber(self.buffer) }
    }

    pub fn page(&self) -> pg_sys::Page {
        unsafe { pg_sys::BufferGetPage(self.buffer) }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // Also while unwinding from an ERROR: that happens before the
        // transaction's abort, which would otherwise release it.
        unsafe { pg_sys::UnlockReleaseBuffer(self.buffer) };
    }
}

/// One generic WAL record over up to 4 pages: register, change the returned
/// page images, then `finish` (an ERROR before that discards the changes).
pub struct WalChange {
    state: *mut pg_sys::GenericXLogState,
}

impl WalChange {
    pub unsafe fn start(index: pg_sys::Relation) -> Self {
        WalChange {
            state: pg_sys::GenericXLogStart(index),
        }
    }

    /// The page image to change; `fresh` logs the whole page (new pages).
    pub unsafe fn page(&mut self, buffer: &Locked, fresh: bool) -> pg_sys::Page {
        pg_sys::GenericXLogRegisterBuffer(
            self.state,
            buffer.buffer,
            if fresh {
                pg_sys::GENERIC_XLOG_FULL_IMAGE as i32
            } else {
                0
            },
        )
    }

    pub unsafe fn finish(mut self) {
        pg_sys::GenericXLogFinish(self.state);
        self.state = std::ptr::null_mut();
    }
}

impl Drop for WalChange {
    fn drop(&mut self) {
        if !self.state.is_null() {
            // Unwinding from an ERROR between start and finish: free the copies.
            unsafe { pg_sys::GenericXLogAbort(self.state) };
        }
    }
}

pub unsafe fn init_page(page: pg_sys::Page, kind: u16) {
    pg_sys::PageInit(page, pg_sys::BLCKSZ as usize, size_of::<Opaque>());
    *opaque(page) = Opaque {
        next: INVALID_BLOCK,
        kind,
        _pad: 0,
    };
}

pub unsafe fn opaque(page: pg_sys::Page) -> *mut Opaque {
    pg_sys::PageGetSpecialPointer(page) as *mut Opaque
}

pub unsafe fn meta(page: pg_sys::Page) -> *mut Meta {
    pg_sys::PageGetContents(page) as *mut Meta
}

/// Write `meta` into a meta page (initialising it) and move pd_lower past it,
/// so that a full-page image keeps it.
pub unsafe fn write_meta(page: pg_sys::Page, value: Meta) {
    init_page(page, KIND_META);
    *meta(page) = value;
    let header = page as *mut pg_sys::PageHeaderData;
    (*header).pd_lower = ((pg_sys::PageGetContents(page) as usize - page as usize) + size_of::<Meta>()) as u16;
}

pub unsafe fn read_meta(index: pg_sys::Relation) -> Meta {
    let buffer = Locked::read(index, META_BLOCK, false);
    let m = *meta(buffer.page());
    drop(buffer);
    if m.magic != MAGIC || m.version != LAYOUT_VERSION {
        pgrx::error!(
            "inf_ir: index \"{}\" is not a valid inf_ivf index (layout {:#x}/{}); REINDEX it",
            relation_name(index),
            m.magic,
            m.version
        );
    }
    m
}

/// Add an item; false when the page has no room.
pub unsafe fn add_item(page: pg_sys::Page, bytes: &[u8]) -> bool {
    pg_sys::PageAddItemExtended(
        page,
        bytes.as_ptr() as pg_sys::Item,
        bytes.len(),
        pg_sys::InvalidOffsetNumber,
        0,
    ) != pg_sys::InvalidOffsetNumber
}

pub unsafe fn has_room(page: pg_sys::Page, len: usize) -> bool {
    pg_sys::PageGetFreeSpace(page) >= len
}

/// The live items of a page, as byte slices valid while the buffer is locked.
pub unsafe fn items<'a>(page: pg_sys::Page) -> impl Iterator<Item = (pg_sys::OffsetNumber, &'a [u8])> {
    let max = pg_sys::PageGetMaxOffsetNumber(page);
    (1..=max).filter_map(move |off| {
        let id = pg_sys::PageGetItemId(page, off);
        // LP_NORMAL = 1; vacuum removes items rather than marking them.
        if (*id).lp_flags() != 1 {
            return None;
        }
        let ptr = pg_sys::PageGetItem(page, id) as *const u8;
        Some((off, std::slice::from_raw_parts(ptr, (*id).lp_len() as usize)))
    })
}

pub unsafe fn relation_name(rel: pg_sys::Relation) -> String {
    std::ffi::CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr())
        .to_string_lossy()
        .into_owned()
}

pub fn list_head_of(item: &[u8]) -> ListHead {
    unsafe { std::ptr::read_unaligned(item.as_ptr() as *const ListHead) }
}

pub fn centroid_of(item: &[u8], dim: usize) -> Vec<f32> {
    item[size_of::<ListHead>()..size_of::<ListHead>() + 4 * dim]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

pub fn list_item(head: ListHead, centroid: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list_item_len(centroid.len()));
    out.extend_from_slice(&head.head.to_ne_bytes());
    out.extend_from_slice(&head.insert.to_ne_bytes());
    for x in centroid {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Rewrite the fixed part of a directory item in place.
pub unsafe fn set_list_head(page: pg_sys::Page, offset: pg_sys::OffsetNumber, head: ListHead) {
    let id = pg_sys::PageGetItemId(page, offset);
    std::ptr::write_unaligned(pg_sys::PageGetItem(page, id) as *mut ListHead, head);
}

pub fn entry_tid(entry: &[u8]) -> pg_sys::ItemPointerData {
    unsafe { std::ptr::read_unaligned(entry.as_ptr() as *const pg_sys::ItemPointerData) }
}

pub fn entry_code(entry: &[u8]) -> &[u8] {
    &entry[ENTRY_TID_LEN..]
}

/// Entry bytes for `tid` and a unit vector in the list of `centroid`.
pub fn make_entry(
    tid: &pg_sys::ItemPointerData,
    unit: &[f32],
    centroid: &[f32],
    rotation: &Rotation,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.resize(entry_len(unit.len()), 0);
    unsafe { std::ptr::write_unaligned(out.as_mut_ptr() as *mut pg_sys::ItemPointerData, *tid) };
    encode_code(unit, centroid, rotation, &mut out[ENTRY_TID_LEN..]);
}

/// The code of a unit vector in the list of `centroid`.
pub fn encode_code(unit: &[f32], centroid: &[f32], rotation: &Rotation, out: &mut [u8]) {
    let mut residual: Vec<f32> = unit.iter().zip(centroid).map(|(v, c)| v - c).collect();
    rotation.apply(&mut residual);
    crate::engine::ivf::codes::encode(&residual, out);
}
