//! ringgate-bench: the load-testing harness (scenarios arrive in the next commits).

fn main() {
    eprintln!("ringgate-bench: no scenarios yet");
}
