//! Handles. A client context gives out its own handles for the backend's
//! sessions and objects (DESIGN.md decision 7): opaque, non-zero, never
//! reused within the context, and each backend thing has at most one. The
//! types keep the three kinds apart, so a client's handle can never be
//! handed to the backend by mistake.

use std::collections::HashMap;
use std::hash::Hash;

use pkcs11_sys::{CK_OBJECT_HANDLE, CK_SESSION_HANDLE};

/// A session handle as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VSession(pub u64);

/// An object handle as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VObject(pub u64);

/// A session of the backend module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BSession(pub CK_SESSION_HANDLE);

/// An object of the backend module (`CK_INVALID_HANDLE` for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BObject(pub CK_OBJECT_HANDLE);

impl BObject {
    /// What the backend answers for in its own way (`CK_INVALID_HANDLE`).
    pub const INVALID: BObject = BObject(0);
}

/// A client handle type made from a number.
pub trait Virtual: Copy + Eq + Hash {
    fn from_raw(v: u64) -> Self;
}

impl Virtual for VSession {
    fn from_raw(v: u64) -> Self {
        VSession(v)
    }
}

impl Virtual for VObject {
    fn from_raw(v: u64) -> Self {
        VObject(v)
    }
}

/// What a map entry stands for in the backend.
pub trait Backed {
    type Backend: Copy + Eq + Hash;
    fn backend(&self) -> Self::Backend;
}

/// Client handles for backend things, both ways. The forward and reverse
/// maps change together or not at all; handles count up from a base and
/// are never given out twice.
pub struct HandleMap<V, E: Backed> {
    entries: HashMap<V, E>,
    reverse: HashMap<E::Backend, V>,
    next: u64,
}

impl<V: Virtual, E: Backed> HandleMap<V, E> {
    /// Handles start after `base` (a random base keeps a handle from before
    /// a kmsd restart from naming something in a new context).
    pub fn new(base: u64) -> Self {
        HandleMap {
            entries: HashMap::new(),
            reverse: HashMap::new(),
            next: base.max(1),
        }
    }

    /// The handle of `e`: the one it has, or a new one.
    pub fn insert(&mut self, e: E) -> V {
        if let Some(v) = self.reverse.get(&e.backend()) {
            return *v;
        }
        self.next += 1;
        let v = V::from_raw(self.next);
        self.reverse.insert(e.backend(), v);
        self.entries.insert(v, e);
        v
    }

    pub fn get(&self, v: V) -> Option<&E> {
        self.entries.get(&v)
    }

    pub fn handle_of(&self, b: E::Backend) -> Option<V> {
        self.reverse.get(&b).copied()
    }

    pub fn remove(&mut self, v: V) -> Option<E> {
        let e = self.entries.remove(&v)?;
        self.reverse.remove(&e.backend());
        Some(e)
    }

    /// Removes every entry for which `gone` holds, and returns them.
    pub fn remove_where(&mut self, mut gone: impl FnMut(&E) -> bool) -> Vec<(V, E)> {
        let vs: Vec<V> = self
            .entries
            .iter()
            .filter(|(_, e)| gone(e))
            .map(|(v, _)| *v)
            .collect();
        vs.into_iter()
            .filter_map(|v| self.remove(v).map(|e| (v, e)))
            .collect()
    }

    pub fn values(&self) -> impl Iterator<Item = &E> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct E(u64);
    impl Backed for E {
        type Backend = u64;
        fn backend(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn one_handle_per_backend_thing() {
        let mut m: HandleMap<VObject, E> = HandleMap::new(100);
        let a = m.insert(E(7));
        assert_eq!(m.insert(E(7)), a);
        assert_ne!(m.insert(E(8)), a);
        assert_eq!(m.handle_of(7), Some(a));
        assert_eq!(m.get(a), Some(&E(7)));
    }

    #[test]
    fn handles_are_never_reused() {
        let mut m: HandleMap<VSession, E> = HandleMap::new(0);
        let a = m.insert(E(1));
        assert_ne!(a.0, 0, "never zero");
        m.remove(a);
        let b = m.insert(E(1));
        assert_ne!(a, b, "a removed handle is not given out again");
    }

    #[test]
    fn both_directions_change_together() {
        let mut m: HandleMap<VObject, E> = HandleMap::new(0);
        let a = m.insert(E(1));
        let b = m.insert(E(2));
        assert_eq!(m.remove(a), Some(E(1)));
        assert_eq!(m.handle_of(1), None);
        let gone = m.remove_where(|e| e.0 == 2);
        assert_eq!(gone, vec![(b, E(2))]);
        assert_eq!(m.handle_of(2), None);
        assert!(m.is_empty());
    }
}
