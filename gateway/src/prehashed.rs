//! A hasher for maps whose keys are already hashes under a process's random key (see the maps
//! that use it): hashing them a second time, on every message, would add nothing.

use std::hash::{BuildHasherDefault, Hasher};

pub(crate) type BuildPrehashed = BuildHasherDefault<Prehashed>;

#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}
