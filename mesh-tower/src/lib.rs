//! The mesh as composable Tower layers, for in-process use and for the sidecar.
#![warn(missing_docs)]
