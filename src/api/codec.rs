//! The API's protobuf codec: tonic-prost's, except that a request that does not parse
//! is the caller's mistake (INVALID_ARGUMENT), not a server fault (INTERNAL, which
//! tonic-prost answers following the gRPC status code guide).

use tonic::{
    codec::{Codec, DecodeBuf, Decoder},
    Code, Status,
};
use tonic_prost::{ProstCodec, ProstDecoder};

/// Generated code names this type through `codec_path` in build.rs.
#[derive(Debug, Clone, Default)]
pub struct SidecarCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for SidecarCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = SidecarDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SidecarDecoder(self.0.decoder())
    }
}

#[derive(Debug, Clone, Default)]
pub struct SidecarDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for SidecarDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| match s.code() {
            Code::Internal => Status::invalid_argument(format!(
                "the message is not a valid protobuf encoding of {}: {}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("it"),
                s.message()
            )),
            _ => s,
        })
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.0.buffer_settings()
    }
}
