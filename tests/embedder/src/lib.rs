//! Nothing here: the check is `tests/hostile_frame.rs`, built as an application depending
//! on kpipe would build it.
