//! Writes the fuzz seeds (`kmsp11_proto::hostile::seeds`) to `fuzz/seeds/`.
fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for (target, name, bytes) in kmsp11_proto::hostile::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus folder");
        std::fs::write(dir.join(name), bytes).expect("write a seed");
        println!("{target}/{name}");
    }
}
