fn main() {
    eprintln!("tether-agent: the runtime is not built yet");
    std::process::exit(2);
}
