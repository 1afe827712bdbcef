//! `baton-fn-spin`: the InVitro-style function trace replay needs; see
//! [`baton_functions::spin`] for what it does with a request.

fn main() {
    baton_functions::run(baton_functions::spin::handle);
}
