mod kms;
mod local;
mod manager;
mod sealed;
mod sealed_record;
