//! `baton-fn-hostile`: attacks its own sandbox on request, for the isolation tests; see
//! [`baton_functions::hostile`] for the plan it takes and the report it gives.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !baton_functions::hostile::child_role(&args) {
        baton_functions::run(baton_functions::hostile::handle);
    }
}
