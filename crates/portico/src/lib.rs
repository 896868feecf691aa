pub mod cloudevents;
