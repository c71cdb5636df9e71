//! etcdctl: the v2 command-line client (`ETCDCTL_API=2` mode of etcdctl 3.4).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = |k: &str| std::env::var(k).ok();
    let code = etcd::ctl::run(&args, &env, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code);
}
