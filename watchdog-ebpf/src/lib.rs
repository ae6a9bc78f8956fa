// Host builds (check, clippy) see an empty library; the programs are in main.rs and
// only build for bpfel-unknown-none.
#![no_std]
