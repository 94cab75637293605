//! Slot and token management (§5.5).

use cryptoki::mechanism::MechanismType;
use cryptoki::slot::Slot;
use kmsp11_tests::raw;

use crate::fixture::{ck, contract, rv};

#[test]
fn token_info() {
    contract("token_info", |t, side, _| {
        let ti = side.p.get_token_info(side.slot).unwrap();
        t.rec("token initialized", ti.token_initialized());
        t.rec("login required", ti.login_required());
        t.rec("user pin initialized", ti.user_pin_initialized());
        t.rec("pin lengths", (ti.min_pin_length(), ti.max_pin_length()));
        assert_eq!(ti.serial_number().len(), 16);
        // Expect CKR_SLOT_ID_INVALID for a slot that does not exist.
        let bad = Slot::try_from(0x7fff_fff0u64).unwrap();
        t.rec("token info bad slot", rv(&side.p.get_token_info(bad)));
    });
}

// The mechanism list and every mechanism's info, one by one.
#[test]
fn mechanism_list_and_info() {
    contract("mechanism_list_and_info", |t, side, _| {
        let mut mechs = side.p.get_mechanism_list(side.slot).unwrap();
        mechs.sort_by_key(|m| u64::from(*m));
        t.rec("mechanism count", mechs.len());
        for m in &mechs {
            let i = side.p.get_mechanism_info(side.slot, *m).unwrap();
            t.rec(
                &format!("mechanism {m}"),
                (i.min_key_size(), i.max_key_size(), format!("{i:?}")),
            );
        }
        t.rec(
            "unknown mechanism info",
            rv(&side.p.get_mechanism_info(
                side.slot,
                MechanismType::new_vendor_defined(0x8000_1234).unwrap(),
            )),
        );
    });
}

// Expect a NULL buffer to give the count, a short one
// CKR_BUFFER_TOO_SMALL with the count, and CKR_ARGUMENTS_BAD if pulCount is NULL.
#[test]
fn slot_list_buffers() {
    contract("slot_list_buffers", |t, side, _| {
        let f = side.raw.f;
        let mut n: raw::CK_ULONG = 0;
        let r1 = unsafe { f.C_GetSlotList.unwrap()(1, std::ptr::null_mut(), &mut n) };
        assert_eq!(r1, raw::CKR_OK);
        assert!(n >= 1);
        let mut one = [0 as raw::CK_ULONG; 1];
        let mut zero: raw::CK_ULONG = 0;
        let r2 = unsafe { f.C_GetSlotList.unwrap()(1, one.as_mut_ptr(), &mut zero) };
        t.rec("slot list short buffer", (ck(r2), zero == n));
        let r3 = unsafe { f.C_GetSlotList.unwrap()(1, std::ptr::null_mut(), std::ptr::null_mut()) };
        t.rec("slot list NULL count", ck(r3));
    });
}
