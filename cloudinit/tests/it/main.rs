//! Integration tests of coreos-cloudinit: apply into a temp root, the CLI, datasources, the web validator and
//! property tests.

mod apply;
mod cli;
mod datasources;
mod props;
mod web;
