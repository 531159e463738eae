//! `Disjoint<T>`: how a mutable slice is shared out to the pool's threads when each thread writes
//! its own part (rows, column ranges, scratch spans). It is the one place where a raw pointer
//! crosses threads; taking a part is `unsafe` and its contract is that parts taken concurrently
//! never overlap. Bounds are always checked.

use std::marker::PhantomData;

#[derive(Debug)]
pub struct Disjoint<'a, T> {
    ptr: *mut T,
    len: usize,
    _slice: PhantomData<&'a mut [T]>,
}

impl<T> Clone for Disjoint<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Disjoint<'_, T> {}

// SAFETY: a `Disjoint` only hands out parts of a `&mut [T]` it borrows for its lifetime; the
// `part` contract makes the parts that threads use at the same time disjoint, so sending it (or
// sharing it) is like sending each thread its own `&mut [T]`, which needs `T: Send`.
unsafe impl<T: Send> Send for Disjoint<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    pub fn new(s: &'a mut [T]) -> Self {
        Self {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _slice: PhantomData,
        }
    }

    /// `len` elements from `start`.
    ///
    /// # Safety
    /// While the returned slice lives, no other part overlapping it is used by anyone.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part(&self, start: usize, len: usize) -> &'a mut [T] {
        assert!(
            start <= self.len && len <= self.len - start,
            "part {start}+{len} of {}",
            self.len
        );
        // SAFETY: in bounds (checked above) of a slice borrowed for 'a; exclusive per contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// The element at `i`, for kernels that write scattered single elements of their part.
    ///
    /// # Safety
    /// As `part`: no one else uses element `i` meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn at(&self, i: usize) -> &'a mut T {
        // SAFETY: per the contract.
        unsafe { &mut self.part(i, 1)[0] }
    }

    /// The base pointer, for SIMD stores; the caller keeps to its own part and in bounds.
    pub fn ptr(&self) -> *mut T {
        self.ptr
    }
}
