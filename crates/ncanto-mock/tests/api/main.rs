//! Black-box tests of ncanto-mock over HTTP: each test starts its own mock on 127.0.0.1:0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod faults;
mod helpers;
mod https;
mod interactions;
mod outages;
