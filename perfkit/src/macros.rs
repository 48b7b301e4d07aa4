//! `cfg_*!` helpers: gate items on a feature and mark them in the docs, in one place.

macro_rules! cfg_server {
    ($($item:item)*) => {
        $(
            #[cfg(feature = "server")]
            #[cfg_attr(docsrs, doc(cfg(feature = "server")))]
            $item
        )*
    };
}

macro_rules! cfg_facade {
    ($($item:item)*) => {
        $(
            #[cfg(feature = "facade")]
            #[cfg_attr(docsrs, doc(cfg(feature = "facade")))]
            $item
        )*
    };
}
