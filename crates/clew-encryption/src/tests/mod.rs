mod kms;
mod local;
mod manager;
mod sealed;
