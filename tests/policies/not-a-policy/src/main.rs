//! A command component: the gateway must refuse it as not fitting the policy world.

fn main() {
    println!("I am not a policy");
}
