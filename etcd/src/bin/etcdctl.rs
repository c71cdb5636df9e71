//! etcdctl: the command-line client (v2 by default, v3 with `ETCDCTL_API=3`, as etcdctl 3.4 offers).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = |k: &str| std::env::var(k).ok();
    let code = etcd::ctl::run(&args, &env, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code);
}
