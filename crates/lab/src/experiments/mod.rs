//! The experiments. Each is a folder of the same few files and plugs into
//! the command line with one line of [`crate::cli::Command`].

pub mod crash;
pub mod run;
