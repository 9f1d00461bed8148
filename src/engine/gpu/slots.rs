//! Where each corpus row lives in a device-resident matrix, so that rows can
//! be appended and deleted without uploading the corpus again: a deleted
//! row's slot is masked and reused by the next append; the matrix grows by
//! doubling (one device-to-device copy), never by re-uploading from the host.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct SlotMap {
    slot_of: HashMap<u64, usize>,
    /// The row id in each slot; None for a free (masked) slot.
    id_in: Vec<Option<u64>>,
    free: Vec<usize>,
    capacity: usize,
}

/// What the device must do for one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Write the vector into this slot (a free one, or the next unused).
    Slot(usize),
    /// Grow the matrix to `capacity` rows first (copy on the device), then
    /// write into `slot`.
    GrowThen { capacity: usize, slot: usize },
}

impl SlotMap {
    pub fn with_capacity(capacity: usize) -> Self {
        SlotMap {
            capacity: capacity.max(1),
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// Rows the device must score (used and masked slots; the mask hides the latter).
    pub fn rows(&self) -> usize {
        self.id_in.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Place row `id` (an update of an existing id reuses its slot).
    pub fn append(&mut self, id: u64) -> Placement {
        if let Some(&slot) = self.slot_of.get(&id) {
            return Placement::Slot(slot);
        }
        let (slot, grow) = match self.free.pop() {
            Some(slot) => (slot, None),
            None => {
                let slot = self.id_in.len();
                self.id_in.push(None);
                let grow = (slot >= self.capacity).then(|| {
                    self.capacity = (self.capacity * 2).max(slot + 1);
                    self.capacity
                });
                (slot, grow)
            }
        };
        self.id_in[slot] = Some(id);
        self.slot_of.insert(id, slot);
        match grow {
            Some(capacity) => Placement::GrowThen { capacity, slot },
            None => Placement::Slot(slot),
        }
    }

    /// Place a batch of rows: each one's slot, and the capacity to grow the
    /// matrix to before writing them (None when they fit).
    pub fn append_batch(&mut self, ids: &[u64]) -> (Vec<usize>, Option<usize>) {
        let mut grow = None;
        let slots = ids
            .iter()
            .map(|&id| match self.append(id) {
                Placement::Slot(slot) => slot,
                Placement::GrowThen { capacity, slot } => {
                    grow = Some(capacity);
                    slot
                }
            })
            .collect();
        (slots, grow)
    }

    /// Free row `id`'s slot; returns it so the device can mask it.
    pub fn delete(&mut self, id: u64) -> Option<usize> {
        let slot = self.slot_of.remove(&id)?;
        self.id_in[slot] = None;
        self.free.push(slot);
        Some(slot)
    }

    /// The row id in `slot`, None when masked (a candidate the device should
    /// not have returned, or a race with a delete: dropped).
    pub fn id_at(&self, slot: usize) -> Option<u64> {
        self.id_in.get(slot).copied().flatten()
    }
}

/// A stretch of a batch that lands in consecutive slots: one copy to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Index of its first row in the batch.
    pub first: usize,
    /// Its first slot.
    pub slot: usize,
    pub len: usize,
}

/// Split a batch's slots (in batch order) into runs of consecutive slots.
pub fn runs(slots: &[usize]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for (i, &slot) in slots.iter().enumerate() {
        match out.last_mut() {
            Some(run) if run.slot + run.len == slot => run.len += 1,
            _ => out.push(Run { first: i, slot, len: 1 }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_fill_then_grow_by_doubling() {
        let mut m = SlotMap::with_capacity(2);
        assert_eq!(m.append(10), Placement::Slot(0));
        assert_eq!(m.append(11), Placement::Slot(1));
        assert_eq!(m.append(12), Placement::GrowThen { capacity: 4, slot: 2 });
        assert_eq!(m.append(13), Placement::Slot(3));
        assert_eq!(m.append(14), Placement::GrowThen { capacity: 8, slot: 4 });
        assert_eq!((m.len(), m.rows(), m.capacity()), (5, 5, 8));
        // Re-appending an id (an update) writes over its own slot.
        assert_eq!(m.append(12), Placement::Slot(2));
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn deletes_mask_and_free_slots_for_reuse() {
        let mut m = SlotMap::with_capacity(4);
        for id in 0..4 {
            m.append(id);
        }
        assert_eq!(m.delete(1), Some(1));
        assert_eq!(m.delete(1), None);
        assert_eq!(m.id_at(1), None);
        assert_eq!(m.len(), 3);
        // The freed slot is reused: no growth, nothing re-uploaded.
        assert_eq!(m.append(99), Placement::Slot(1));
        assert_eq!(m.id_at(1), Some(99));
        assert_eq!(m.rows(), 4);
        assert_eq!(m.id_at(1000), None);
    }

    #[test]
    fn a_batch_grows_once_and_splits_into_runs() {
        let mut m = SlotMap::with_capacity(4);
        let (slots, grow) = m.append_batch(&[1, 2, 3]);
        assert_eq!((slots, grow), (vec![0, 1, 2], None));
        m.delete(2);
        // Slot 1 is reused, then 3 fits, then 4..6 need growth to 8.
        let (slots, grow) = m.append_batch(&[7, 8, 9, 10, 11]);
        assert_eq!((slots.clone(), grow), (vec![1, 3, 4, 5, 6], Some(8)));
        assert_eq!(
            runs(&slots),
            vec![
                Run {
                    first: 0,
                    slot: 1,
                    len: 1
                },
                Run {
                    first: 1,
                    slot: 3,
                    len: 4
                }
            ]
        );
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(
            runs(&[5, 4]),
            vec![
                Run {
                    first: 0,
                    slot: 5,
                    len: 1
                },
                Run {
                    first: 1,
                    slot: 4,
                    len: 1
                }
            ]
        );
    }
}
