//! Small pieces the layers above share: the clock and byte-level text scans.

pub(crate) mod clock;
pub(crate) mod text;
