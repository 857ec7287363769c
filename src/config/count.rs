//! Whole-number settings with a range, checked inside serde so an absurd
//! count (one past a semaphore's maximum, a queue that cannot be allocated)
//! is reported with the file, line and key it came from.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer};

/// A count from `MIN` to `MAX`, held as `T` (which must hold `MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CountIn<T, const MIN: u64, const MAX: u64>(pub T);

impl<T: TryFrom<u64>, const MIN: u64, const MAX: u64> CountIn<T, MIN, MAX> {
    /// Checks `value` against the range; the error names it.
    pub(super) fn new(value: i128) -> Result<Self, String> {
        let checked = u64::try_from(value)
            .ok()
            .filter(|v| (MIN..=MAX).contains(v))
            .ok_or_else(|| format!("{value} is out of range: use {MIN} to {MAX}"))?;
        T::try_from(checked)
            .map(Self)
            .map_err(|_| format!("{value} is too large for this platform"))
    }
}

impl<'de, T: TryFrom<u64>, const MIN: u64, const MAX: u64> Deserialize<'de>
    for CountIn<T, MIN, MAX>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T, const MIN: u64, const MAX: u64>(PhantomData<T>);
        impl<T: TryFrom<u64>, const MIN: u64, const MAX: u64> de::Visitor<'_> for Visitor<T, MIN, MAX> {
            type Value = CountIn<T, MIN, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a whole number from {MIN} to {MAX}")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                CountIn::new(i128::from(v)).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                CountIn::new(i128::from(v)).map_err(E::custom)
            }
        }
        deserializer.deserialize_u64(Visitor::<T, MIN, MAX>(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_outside_the_range_are_refused() {
        type Connections = CountIn<usize, 1, 1_000_000>;
        assert_eq!(Connections::new(1).unwrap().0, 1);
        assert_eq!(Connections::new(1_000_000).unwrap().0, 1_000_000);
        for bad in [0, -1, 1_000_001, i128::from(u64::MAX)] {
            let message = Connections::new(bad).unwrap_err();
            assert!(message.contains("use 1 to 1000000"), "{bad}: {message}");
        }
    }
}
