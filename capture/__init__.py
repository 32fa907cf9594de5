"""trace's recorder: eBPF syscall capture written as self-contained Parquet segments."""
