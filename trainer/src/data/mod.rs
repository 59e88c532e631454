//! From a folder of photos to training inputs: scanning and splitting, decoding into the
//! run's image store, augmentation.

pub mod augment;
pub mod batch;
pub mod classes;
pub mod dataset;
pub mod idx;
pub mod images;
pub mod sample_data;
pub mod store;
