//! deploy: the local cluster bring-up (`coreos-up`) and the install layout of the units and configs.
