//! WASI as plugins see it: every WASI 0.2 interface wasmtime provides is
//! linked, configured with nothing (no preopened folders, environment,
//! arguments, sockets or stdio; see `HostState`'s `WasiView`).
//! `wasi:io/poll`'s `poll` and `pollable.block` (a sleep, a timer) wait at
//! most until the call's deadline and hand the request worker's turn on
//! while they wait. The streams' blocking reads, writes and flushes are
//! left as wasmtime has them: with stdin empty and stdout and stderr
//! discarded, they never wait.
//!
//! The epoch stops wasm code, not a host function that waits, so without
//! this a plugin sleeping 10 s held its host thread for 10 s.

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, Resource, ResourceTable, ResourceType};
use wasmtime::{Engine, StoreContextMut};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable};
use wasmtime_wasi_io::bindings::wasi::io::poll::{Host as _, HostPollable as _};

use super::state::{HostState, bounded};

/// The version of `wasi:io` wasmtime-wasi 48 defines; guests built against
/// an older 0.2.x link to it by semver.
const IO_POLL: &str = "wasi:io/poll@0.2.12";

/// WASI packages wasmtime-wasi links (all configured with nothing). A
/// component that imports another WASI package (e.g. `wasi:http`) loads
/// with those imports linked to traps, and a warning.
const PROVIDED: [&str; 6] = [
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
];

/// Whether the host links the WASI interface `import` (a 0.2.x name).
pub fn provided(import: &str) -> bool {
    let version_ok = import
        .rsplit_once('@')
        .is_some_and(|(_, v)| v.starts_with("0.2."));
    version_ok && PROVIDED.iter().any(|p| import.starts_with(p))
}

/// Adds WASI to `linker`, with the waits of `wasi:io/poll` bounded.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut poll = linker.instance(IO_POLL)?;
    poll.func_wrap(
        "poll",
        |mut cx: StoreContextMut<'_, HostState>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let state = cx.data_mut();
            let remaining = state.remaining();
            let table: &mut ResourceTable = &mut state.table;
            match bounded(remaining, table.poll(pollables)) {
                Some(ready) => Ok((ready?,)),
                None => state.stop_at_deadline("wasi:io/poll.poll"),
            }
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut cx: StoreContextMut<'_, HostState>, (pollable,): (Resource<DynPollable>,)| {
            let state = cx.data_mut();
            let remaining = state.remaining();
            let table: &mut ResourceTable = &mut state.table;
            match bounded(remaining, table.block(pollable)) {
                Some(done) => done,
                None => state.stop_at_deadline("wasi:io/poll.pollable.block"),
            }
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Links every function of the WASI interfaces in `missing` (imports of
/// `component` the host does not provide) to a trap that names it. Their
/// resources get a placeholder type, except those that alias `wasi:io`'s
/// (a `pollable`, the streams, their error), which must be the host's own
/// types for the component to type-check. (wasmtime's
/// `define_unknown_imports_as_traps` would also stub resources that an
/// interface the host does provide merely `use`s, with the wrong type.)
pub fn stub_missing(
    linker: &mut Linker<HostState>,
    engine: &Engine,
    component: &Component,
    missing: &[String],
) -> wasmtime::Result<()> {
    struct Placeholder;
    for (name, item) in component.component_type().imports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        if !missing.iter().any(|m| m == name) {
            continue;
        }
        let mut stubs = linker.instance(name)?;
        for (export, item) in instance.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    let what = format!("{name}#{export}");
                    stubs.func_new(export, move |_, _, _, _| {
                        Err(wasmtime::Error::msg(format!(
                            "{what} is not provided by resetgate"
                        )))
                    })?;
                }
                ComponentItem::Resource(_) => {
                    let ty = match export {
                        "pollable" => ResourceType::host::<DynPollable>(),
                        "input-stream" => ResourceType::host::<DynInputStream>(),
                        "output-stream" => ResourceType::host::<DynOutputStream>(),
                        "error" | "io-error" => {
                            ResourceType::host::<wasmtime_wasi_io::streams::Error>()
                        }
                        _ => ResourceType::host::<Placeholder>(),
                    };
                    stubs.resource(export, ty, |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::provided;

    #[test]
    fn the_wasi_packages_wasmtime_links_are_provided() {
        assert!(provided("wasi:io/poll@0.2.6"));
        assert!(provided("wasi:clocks/monotonic-clock@0.2.12"));
        assert!(provided("wasi:cli/environment@0.2.0"));
        assert!(!provided("wasi:http/outgoing-handler@0.2.3"));
        assert!(!provided("wasi:io/poll@0.3.0"));
        assert!(!provided("wasi:keyvalue/store@0.2.0-draft"));
    }
}
