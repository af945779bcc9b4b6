//! The parameters of every JSON-RPC method, parsed by the functions the server uses
//! (`uacreg::fuzzing::parse_params_for_fuzzing`).
//!
//! Input: one control byte, then the `params` text (UTF-8; other inputs are skipped). The
//! server only passes on text that parsed as JSON; any text is more than that. The byte picks
//! the method (low seven bits, modulo the list) and, with bit 7, sends no `params` at all.

#![no_main]

use libfuzzer_sys::fuzz_target;
use uacreg_fuzz::{Unstructured, control};

const METHODS: [&str; 19] = [
    "uac.reg_info",
    "uac.reg_enable",
    "uac.reg_disable",
    "uac.reg_register",
    "uac.reg_unregister",
    "uac.reg_refresh",
    "uac.reg_remove",
    "uac.reg_lookup",
    "uac.reg_reload",
    "uac.reg_active",
    "uac.reg_add",
    "uac.reg_add",
    "uac.reg_dump",
    "uacreg.status",
    "uacreg.shutdown",
    "uac.no_such_method",
    "uacreg.rows",
    "uacreg.row",
    "uacreg.overview",
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let choice = control(&mut u);
    let Ok(params) = std::str::from_utf8(u.take_rest()) else {
        return;
    };
    let method = METHODS[usize::from(choice & 0x7f) % METHODS.len()];
    let params = (choice & 0x80 == 0).then_some(params);
    let _ = uacreg::fuzzing::parse_params_for_fuzzing(method, params);
});
