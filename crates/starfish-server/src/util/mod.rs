//! Small pieces the layers above share: byte-level text scans.

pub(crate) mod text;
